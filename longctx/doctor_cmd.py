"""`longctx doctor`: what this machine will run and what it lacks, before a long job finds out.

    longctx doctor            # a short report
    longctx doctor --json     # the same as JSON

Versions (Python, torch and its CUDA, transformers), the GPU, the optional kernel packages (each one that
does not import with its import error), the LONGCTX_* switches and kernel caches, and the kernel each part
of a model takes here, asked of the code that picks it (longctx.model.attention.select_backend, the GDN
layer, the fused elementwise switch): training and inference attention for one document per row, packed
documents and a sliding window. Notes name what makes a run slow or fail (fla missing on CUDA, Hopper's
fla backward without tilelang, no kernel cache).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys

PACKAGES = (  # name shown, module imported
    ("fla", "fla"),
    ("triton", "triton"),
    ("tilelang", "tilelang"),
    ("flash-attn", "flash_attn"),
    ("lm-eval", "lm_eval"),
    ("datasets", "datasets"),
    ("vllm", "vllm"),
)


ATTENTION = {  # longctx.model.attention's backends, in words
    "flash": "flash-attn 2",
    "sdpa": "torch SDPA: cuDNN or flash kernels",
    "sdpa_docs": "torch SDPA one document at a time",
    "flex": "FlexAttention, compiled at first use",
    "fla": "fla's parallel_attn",
    "varlen": "torch's built-in flash-attention 2",
    "math": "torch SDPA with a dense mask",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _package(module: str) -> dict:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 -- absent, or present and broken: both are what the user must know
        return {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    return {"ok": True, "version": getattr(mod, "__version__", "installed")}


def _cache_size(path: str | None) -> str | None:
    """'N files, M MiB' under a cache directory (a fresh machine's is empty: every kernel compiles anew)."""
    if not path or not os.path.isdir(path):
        return None if not path else "not there yet"
    files = size = 0
    for root, _, names in os.walk(path):
        for n in names:
            files += 1
            try:
                size += os.path.getsize(os.path.join(root, n))
            except OSError:
                pass
    return f"{files} files, {size / 2**20:.0f} MiB"


def _gpu() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "torch_cuda": torch.version.cuda}
    props = torch.cuda.get_device_properties(0)
    return {
        "available": True,
        "count": torch.cuda.device_count(),
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch_cuda": torch.version.cuda,
    }


def _kernels(device: str) -> dict:
    """The kernel each part takes on `device`, from the functions that choose them."""
    import torch

    from longctx.model import attention, fused, gdn, rope_kernel
    from longctx.model.varlen import doc_layout

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    q = torch.empty(1, 256, 2, 64, dtype=dtype, device=dev)
    cu = torch.tensor([0, 100, 256], dtype=torch.int32, device=dev)
    cases = {"one document per row": (None, None), "packed documents": (cu, None), "sliding window": (None, 64)}
    out = {}
    for mode, grad in (("training", True), ("inference", False)):
        with torch.set_grad_enabled(grad):
            for name, (docs, window) in cases.items():
                key = f"attention, {mode}, {name}"
                try:
                    chosen = attention.select_backend(q, doc_layout(docs, 1, 256, dev), window)
                    out[key] = f"{chosen} ({ATTENTION[chosen]})"
                except (RuntimeError, ValueError) as e:
                    out[key] = f"error: {e}"
    try:
        out["gated deltanet"] = "fla kernels" if gdn.takes_fla(dev.type == "cuda", warn=False) else "PyTorch reference"
    except RuntimeError as e:  # LONGCTX_GDN_BACKEND=fla where fla cannot run: what the run would stop on
        out["gated deltanet"] = f"error: {e}"
    try:
        out["rmsnorm / swiglu"] = "fla fused kernels" if fused.kernels(q) else "PyTorch"
    except RuntimeError as e:  # LONGCTX_FUSED_ELEMENTWISE=1 without fla: what the run would stop on
        out["rmsnorm / swiglu"] = f"error: {e}"
    table = torch.empty(256, 64, dtype=torch.float32, device=dev)
    out["rope"] = "longctx's Triton kernel" if rope_kernel.applies(q, table) else "PyTorch (transformers' ops)"
    from longctx.train.loss import resolve_backend

    ce = resolve_backend("auto", dev)
    how = " (fla's fused CE kernels)" if ce == "chunked-fla" else " (PyTorch)"
    out["cross-entropy (loss_backend auto)"] = ce + how
    return out


def collect() -> dict:
    import torch
    import transformers

    from longctx import __version__, env
    from longctx.evaluate import vllm_compat
    from longctx.model import gdn, optional

    gpu = _gpu()
    packages = {name: _package(module) for name, module in PACKAGES}
    switches = {name: os.environ.get(name) for name in env.SWITCHES if os.environ.get(name)}
    caches = {var: os.environ.get(var) for var in ("LONGCTX_KERNEL_CACHE", *env.KERNEL_CACHES)}
    cache_sizes = {var: _cache_size(path) for var, path in caches.items() if var != "LONGCTX_KERNEL_CACHE" and path}
    device = "cuda" if gpu["available"] else "cpu"
    notes = []
    if gpu["available"]:
        if not gdn.fla_ops():
            notes.append(
                "CUDA without fla's kernels: the Gated DeltaNet layers run their PyTorch reference, many times "
                f"slower ({optional.why_missing(*gdn.FLA_SPECS)}); pip install 'longctx[gpu]'"
            )
        triton = packages["triton"].get("version", "0")
        old_triton = tuple(int(x) for x in triton.split(".")[:3] if x.isdigit()) < (3, 7, 1)
        if gpu["capability"] == "9.0" and old_triton and not packages["tilelang"]["ok"]:
            notes.append("Hopper with Triton < 3.7.1: fla's gated backward needs tilelang, which does not import")
        if not caches["LONGCTX_KERNEL_CACHE"] and not caches["TRITON_CACHE_DIR"]:
            notes.append(
                "no kernel cache set: a fresh machine compiles and autotunes for minutes before the first step; "
                "LONGCTX_KERNEL_CACHE=DIR on a persistent or shared directory keeps them"
            )
    plugin = vllm_compat.registered()
    if packages["vllm"]["ok"] and not plugin:
        notes.append(
            "vLLM without longctx's vllm.general_plugins entry point (longctx run from a source tree?): vLLM 0.26 "
            "then loads no Olmo Hybrid checkpoint's conv weights; `pip install -e .` registers it"
        )
    from longctx.model import attention

    return {
        "longctx": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": gpu,
        "packages": packages,
        "torch_varlen_attention": bool(attention.varlen_fn()),
        "vllm_plugin": plugin,
        "switches": switches,
        "kernel_caches": caches,
        "kernel_cache_sizes": cache_sizes,
        "kernels": {"device": device, **_kernels(device)},
        "notes": notes,
    }


def _text(r: dict) -> str:
    g = r["gpu"]
    gpu = (
        f"{g['count']} x {g['name']} (sm {g['capability']}, {g['memory_gib']} GiB), CUDA {g['torch_cuda']}"
        if g["available"]
        else "none" + (f" (torch built for CUDA {g['torch_cuda']})" if g["torch_cuda"] else " (a CPU build of torch)")
    )
    lines = [
        f"longctx {r['longctx']}  Python {r['python']}  torch {r['torch']}  transformers {r['transformers']}",
        f"GPU: {gpu}",
        "packages:",
        *(f"  {name:<11} {p['version'] if p['ok'] else 'missing: ' + p['error']}" for name, p in r["packages"].items()),
        f"torch varlen flash-attention (attention backend varlen): {'yes' if r['torch_varlen_attention'] else 'no'}",
        "switches: " + (", ".join(f"{k}={v}" for k, v in r["switches"].items()) or "none set"),
        "kernel caches: "
        + (
            ", ".join(
                f"{k}={v}" + (f" ({r['kernel_cache_sizes'][k]})" if r["kernel_cache_sizes"].get(k) else "")
                for k, v in r["kernel_caches"].items()
                if v
            )
            or "none set"
        ),
        f"kernels on {r['kernels']['device']}:",
        *(f"  {k}: {v}" for k, v in r["kernels"].items() if k != "device"),
    ]
    lines += [f"note: {n}" for n in r["notes"]] or ["no notes"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else _text(report), file=sys.stdout)
    return 0
