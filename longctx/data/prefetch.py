"""Run a batch generator ahead of the training step: in a thread, or in a forked process.

A thread overlaps only the parts of batch-making that release the GIL (the Rust tokenizer); the
corpus generation, packing and numpy glue hold it, and so they take their time out of the step's
host thread, the one that launches kernels. In a small model's host-bound step that is time lost
(docs/benchmarks.md, "Data prefetch"). A process takes it off that thread; the batches cross a
pipe as numpy arrays (pickled, about 3 MB for 16 x 4096 tokens) and come back as tensors.

The process is forked (Linux), as torch's DataLoader does: the child runs only Python, numpy and
the tokenizer, never CUDA or torch's thread pools. Both yield exactly what the generator yields, in
order; an error in the generator is raised in the consumer; closing the consumer stops the worker.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import signal
import threading

import numpy as np
import torch


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _Done:
    pass


def _put(q, stop, item) -> bool:
    """Put unless the consumer has gone (stop set); False then."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


def _work(gen, q, stop, wrap=lambda x: x) -> None:
    try:
        for item in gen:
            if not _put(q, stop, wrap(item)):
                return
        _put(q, stop, _Done())
    except BaseException as e:  # noqa: BLE001 -- re-raised in the consumer
        _put(q, stop, _Raised(_picklable(e)))


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")


def _to_numpy(item):
    """(batch dict, position) with the batch's tensors as numpy arrays (plain pickling, no shared memory)."""
    batch, pos = item
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}, pos


def _from_numpy(item):
    batch, pos = item
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}, pos


def _drain(get, alive):
    """Yield items from `get` until the worker says done; raise its error; notice a dead worker."""
    while True:
        try:
            item = get(timeout=1.0)
        except queue.Empty:
            if not alive():
                raise RuntimeError("the data worker stopped without a word (killed?)") from None
            continue
        if isinstance(item, _Done):
            return
        if isinstance(item, _Raised):
            raise item.exc
        yield item


def in_thread(gen, depth: int):
    """`gen` run in a thread, `depth` items ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    t = threading.Thread(target=_work, args=(gen, q, stop), daemon=True, name="longctx-data")
    t.start()
    try:
        yield from _drain(q.get, t.is_alive)
    finally:
        stop.set()


def in_process(gen, depth: int):
    """`gen` (yielding (batch dict, position)) run in a forked process, `depth` batches ahead."""
    ctx = mp.get_context("fork")
    q = ctx.Queue(maxsize=depth)
    stop = ctx.Event()

    def child():
        # Ctrl-C reaches the whole process group: the trainer decides what it means. SIGTERM (terminate()
        # below) must end the worker, not run a stop handler the trainer installed before the fork.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _work(gen, q, stop, _to_numpy)
        if stop.is_set():  # the consumer has gone: exit without waiting for it to read what is queued
            q.cancel_join_thread()

    p = ctx.Process(target=child, daemon=True, name="longctx-data")
    p.start()
    try:
        for item in _drain(q.get, p.is_alive):
            yield _from_numpy(item)
    finally:
        stop.set()
        p.join(timeout=2.0)
        if p.is_alive():
            p.terminate()
            p.join(timeout=2.0)
        if p.is_alive():
            p.kill()
            p.join()
        q.close()
