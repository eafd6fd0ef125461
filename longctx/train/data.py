"""Training data for the loop: one resumable loader per stage, and a check that the source yields."""

from __future__ import annotations

from collections.abc import Callable

from longctx import env
from longctx.config import RunConfig
from longctx.errors import UsageError

DEFAULT_SOURCE = "embedded"
# Training on a GPU: two batches made ahead in a forked process, off the host thread that launches the
# step's kernels (a thread shares its GIL; docs/benchmarks.md, "Data prefetch").
# LONGCTX_DATA_PREFETCH=thread (or off) runs them in a thread (or inline) instead.
DATA_PREFETCH = {"prefetch": 2, "prefetch_in": "process"}
PREFETCH_ENV = "LONGCTX_DATA_PREFETCH"


def data_prefetch(device) -> dict:
    """loader_factory's prefetch arguments for training on `device`: none on CPU (the step itself
    holds the cores); on a GPU DATA_PREFETCH, or what LONGCTX_DATA_PREFETCH (process|thread|off) says."""
    if getattr(device, "type", device) != "cuda":
        return {}
    where = env.get(PREFETCH_ENV) or DATA_PREFETCH["prefetch_in"]
    return {} if where == "off" else {**DATA_PREFETCH, "prefetch_in": where}


def loader_factory(
    cfg: RunConfig, tokenizer, *, prefetch: int = 0, prefetch_in: str = "thread", rank: int = 0, world_size: int = 1
) -> Callable:
    """stage -> a fresh loader at that stage's seq_len and batch size (same seed, same source);
    `prefetch` batches made ahead in a thread or a process (`prefetch_in`, longctx.data.prefetch)."""
    from longctx.data import build_loader
    from longctx.data.synthetic import PROSE, Layout

    source = cfg.data.source or DEFAULT_SOURCE
    embedded = {}
    layout = Layout(lines=cfg.data.line_layout, short_noise=cfg.data.short_noise)
    if cfg.data.mix is not None or cfg.data.doc_tokens is not None or cfg.data.fillers is not None or layout != PROSE:
        if source != "embedded":
            raise UsageError(
                f"data.mix / data.doc_tokens / data.fillers / data.line_layout / data.short_noise "
                f"shape the embedded corpus; the source is {source!r}"
            )
        if cfg.data.mix is not None:
            embedded["mix"] = dict(cfg.data.mix)
        if cfg.data.doc_tokens is not None:
            embedded["doc_tokens"] = tuple(cfg.data.doc_tokens)
        if cfg.data.fillers is not None:
            embedded["fillers"] = tuple(cfg.data.fillers)
        if layout != PROSE:
            embedded["layout"] = layout

    def make(stage, *, ahead: bool = True):  # ahead=False: batches made inline (a one-batch check)
        return build_loader(
            source,
            tokenizer,
            stage.seq_len,
            stage.batch_size,
            seed=cfg.seed,
            doc_mask=cfg.data.doc_mask,
            long_doc_fraction=cfg.data.long_doc_fraction,
            long_doc_weight=cfg.data.long_doc_weight,
            text_field=cfg.data.text_field,
            token_dtype=cfg.data.token_dtype,
            prefetch=prefetch if ahead else 0,
            prefetch_in=prefetch_in,
            rank=rank,
            world_size=world_size,
            **embedded,
        )

    return make


def check_data(make: Callable, stage) -> None:
    """Build the first stage's loader and take one batch, so an empty or unreadable source fails
    before OUT is created. The loader is thrown away; training builds its own. Its batch is made
    inline: a prefetch worker (a forked process on CUDA) would be started and stopped for one batch."""
    source = "--data"
    try:
        loader = make(stage, ahead=False)
        next(iter(loader))
    except UsageError as e:
        raise UsageError(f"{source}: {e}") from None
    except StopIteration:
        raise UsageError(
            f"{source}: the data source yields no batch of {stage.batch_size} x {stage.seq_len} tokens"
        ) from None
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(
            f"{source}: cannot read the data ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
