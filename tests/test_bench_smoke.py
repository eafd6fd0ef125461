"""The GPU benchmark scripts run end to end on CPU (their smoke-test mode) with every ablation
flag, and write the JSON and profile files they promise; the figures themselves are not checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str, out: Path) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / script), "--device", "cpu", "--out", str(out), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / script.replace(".py", ".json")).read_text())


def test_eval_throughput_smoke_with_ablations(tmp_path):
    data = bench(
        "eval_throughput.py",
        "--config",
        "hybrid-tiny",
        "--lengths",
        "128",
        "--samples",
        "2",
        "--max-new-tokens",
        "3",
        "--cuda-graphs",
        "--keep-graph",
        "--fla-intracard",
        "--prefill-tokens",
        "256",
        "--profile",
        "--fused-elementwise",
        out=tmp_path,
    )
    assert data["meta"]["ours_cuda_graphs"] is True and data["meta"]["fla_intracard_cp"] == "1"
    assert data["meta"]["ours_keep_graph"] is True
    assert data["meta"]["ours_fused_elementwise"] == "fla on CUDA"  # requested; CPU tensors stay plain
    ours = next(r for r in data["results"] if r["impl"] == "ours")
    assert ours["status"] == "ok" and (tmp_path / ours["profile"]["file"]).exists()
    agree = data["agreement"]["128"]
    assert agree["n"] == 2 and len(agree["divergences"]) == agree["n"] - agree["identical"]
    assert all("ours_gap" in d or "reason" in d for d in agree["divergences"])


def test_train_throughput_smoke_with_profile(tmp_path):
    data = bench(
        "train_throughput.py",
        "--configs",
        "hybrid-tiny",
        "--lengths",
        "64",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--profile",
        "--fused-elementwise",
        "--checkpoint-fraction",
        "0.75",
        out=tmp_path,
    )
    assert {(r["impl"], r["status"]) for r in data["results"]} == {("ours", "ok"), ("peer", "ok")}
    ours = next(r for r in data["results"] if r["impl"] == "ours")
    assert ours["ours_fused_elementwise"] == "fla on CUDA"
    assert ours["ours_checkpointed_blocks"] == [0, 1, 2]  # hybrid-tiny: the three GDN blocks of four
    assert all((tmp_path / r["profile"]["file"]).exists() for r in data["results"])


def test_data_prefetch_bench_smoke(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "bench" / "data_prefetch.py"),
        "--study",
        str(REPO / "configs" / "experiments" / "study-tiny.yaml"),
        "--steps",
        "2",
        "--rounds",
        "1",
        "--host-ms",
        "5",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "data_prefetch.json").read_text())
    assert [r["mode"] for r in data["results"]] == [
        "host work only",
        "inline",
        "thread, prefetch 2",
        "process, prefetch 2",
    ]
    assert all(r["steps"] == 2 and r["step_ms"] > 0 for r in data["results"])
    assert "| process, prefetch 2 |" in done.stdout


def test_eval_cell_overhead_smoke(tmp_path):
    """bench/eval_cell_overhead.py: both passes run over the same cells and the JSON names them."""
    from longctx.data.tokenizer import default_tokenizer
    from longctx.model import load_config

    model = tmp_path / "tok"
    default_tokenizer().save_pretrained(model)  # a config and a tokenizer: no weights are loaded
    load_config("hybrid-tiny").save_pretrained(model)
    out = tmp_path / "o.json"
    cmd = [sys.executable, str(REPO / "bench" / "eval_cell_overhead.py"), "--model", str(model), "--lengths", "1k",
           "--tasks", "niah_single_1,vt", "--samples", "2", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LONGCTX_RULER_CACHE": str(tmp_path / "c")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(out.read_text())
    assert row["cells"] == 2 and row["tasks"] == ["niah_single_1", "ruler_vt"] and row["lengths"] == [1024]
    assert row["env_report_per_cell_s"] > 0 and row["env_report_once_s"] > 0
    assert "seconds per cell outside the model" in done.stdout


FAKE_VLLM = '''
"""A stand-in for vllm's offline API (LLM, SamplingParams, TokensPrompt): echoes each prompt's last tokens."""
import json, os
__version__ = "fake"


def TokensPrompt(prompt_token_ids):
    return {"prompt_token_ids": prompt_token_ids}


class SamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class _Out:
    def __init__(self, ids):
        self.outputs = [type("C", (), {"token_ids": ids})()]


def _obj(**attrs):
    return type("O", (), attrs)()


class LLM:
    def __init__(self, **kw):
        open(os.environ["FAKE_VLLM_LOG"], "a").write(json.dumps(kw) + "\\n")
        if os.environ.get("FAKE_VLLM_HANG"):  # an engine that never starts, with a process of its own, like vLLM's
            import subprocess, time
            print("fake engine: compiling")
            if os.environ.get("FAKE_VLLM_DIE"):  # its engine dies and the parent waits on it for good
                print(os.environ["FAKE_VLLM_DIE"], flush=True)
            core = subprocess.Popen(["sleep", "600"])
            open(os.environ["FAKE_VLLM_HANG"], "w").write(str(core.pid))
            time.sleep(600)
        # what the engine resolved, where vLLM keeps it (LLMEngine.vllm_config); 16384: its default on an H100
        sched = _obj(max_num_batched_tokens=kw.get("max_num_batched_tokens", 16384), max_num_seqs=1024,
                     enable_chunked_prefill=True)
        capture = kw.get("compilation_config", {}).get("max_cudagraph_capture_size", 512)  # 512: min(2 x seqs, 512)
        comp = _obj(mode="CompilationMode.VLLM_COMPILE", cudagraph_mode="CUDAGraphMode.FULL_AND_PIECEWISE",
                    max_cudagraph_capture_size=capture)
        self.llm_engine = _obj(vllm_config=_obj(scheduler_config=sched, compilation_config=comp))

    def generate(self, prompts, sp, use_tqdm=False):
        open(os.environ["FAKE_VLLM_LOG"], "a").write(json.dumps({"generate": len(prompts)}) + "\\n")
        n = sp.kw["max_tokens"]
        return [_Out(p["prompt_token_ids"][-n:]) for p in prompts]

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        open(os.environ["FAKE_VLLM_LOG"], "a").write(json.dumps({"reset_prefix_cache": True}) + "\\n")
        return True
'''


def run_with_fake_vllm(tmp_path, *args):
    """bench/eval_throughput.py on CPU (hybrid-tiny, 3 new tokens) with FAKE_VLLM first on the path; returns the
    finished process (rc 0 asserted) and the fake's call log (one JSON line per LLM(), generate and reset)."""
    fake = tmp_path / "fake"
    (fake / "vllm").mkdir(parents=True)
    (fake / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    log = tmp_path / "llm.jsonl"
    cmd = [sys.executable, str(REPO / "bench" / "eval_throughput.py"), "--device", "cpu", "--out", str(tmp_path),
           "--config", "hybrid-tiny", "--max-new-tokens", "3", *args]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "FAKE_VLLM_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, log


def test_eval_throughput_against_vllm_plumbing(tmp_path):
    """--impl vllm: the checkpoint and prompt ids go to bench/vllm_peer/throughput.py in a process of its own (here
    with vllm faked), whose rows come back per length with samples/s and token agreement against ours."""
    args = ["--lengths", "96,128", "--samples", "2", "--impl", "ours,vllm", "--vllm-max-num-batched-tokens", "4096"]
    done, log = run_with_fake_vllm(tmp_path, *args)
    data = json.loads((tmp_path / "eval_throughput.json").read_text())
    rows = {(r["impl"], r["seq_len"]): r for r in data["results"]}
    prompts = json.loads((tmp_path / "vllm_prompts.json").read_text())
    for T in (96, 128):
        v = rows[("vllm", T)]
        assert v["status"] == "ok" and v["samples_per_s"] > 0 and v["samples"] == 2
        assert v["generated"] == [p[-3:] for p in prompts[str(T)]]  # the ids that went in came back
        assert len(prompts[str(T)][0]) == T - 3
        assert data["vllm_agreement"][str(T)]["n"] == 2
        engine = v["vllm"]["engine"]  # the settings the engine resolved, with each row
        assert engine["max_num_batched_tokens"] == 4096 and engine["enable_chunked_prefill"] is True
        assert engine["cudagraph_mode"].endswith("FULL_AND_PIECEWISE")
    kw = [r for r in map(json.loads, log.read_text().splitlines()) if "generate" not in r]
    assert len(kw) == 1 and kw[0]["max_model_len"] == 128 and kw[0]["skip_tokenizer_init"] is True
    assert kw[0]["enable_prefix_caching"] is False  # vLLM 0.26's default for hybrid models
    assert kw[0]["max_num_batched_tokens"] == 4096 and "compilation_config" not in kw[0]  # vLLM's own capture sizes
    assert engine["max_cudagraph_capture_size"] == 512
    assert (Path(kw[0]["model"]) / "config.json").name == "config.json"
    assert "| T | vllm samples/s | ours samples/s | ours / vllm |" in done.stdout


def test_eval_throughput_stops_a_stalled_vllm_and_keeps_its_log(tmp_path):
    """A vLLM run past --budget-s: stopped with its engine process, the row says so, and its output so far is in
    OUT/vllm_log.txt (unbuffered), where a slow start can be read."""
    pid_file = tmp_path / "core.pid"
    os.environ["FAKE_VLLM_HANG"] = str(pid_file)
    try:
        run_with_fake_vllm(tmp_path, "--lengths", "96", "--samples", "2", "--impl", "vllm", "--budget-s", "20")
    finally:
        del os.environ["FAKE_VLLM_HANG"]
    (row,) = json.loads((tmp_path / "eval_throughput.json").read_text())["results"]
    assert row["status"] == "error" and "stopped at the time budget" in row["error"]
    assert "fake engine: compiling" in (tmp_path / "vllm_log.txt").read_text()
    pid = int(pid_file.read_text())
    for _ in range(50):  # killed; gone once its parent (the fake, killed too) no longer holds it
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"vLLM's engine process {pid} outlived the stop")


def test_eval_throughput_stops_vllm_soon_after_its_engine_died(tmp_path, monkeypatch):
    """vLLM's log says its engine died (here the line vLLM 0.26 printed after a device-side assert) while its
    process waits on: stopped DEAD_GRACE_S later, long before the budget, the row saying why."""
    monkeypatch.setenv("FAKE_VLLM_HANG", str(tmp_path / "core.pid"))
    monkeypatch.setenv("FAKE_VLLM_DIE", "[shutdown] MPClient: engine core exited unexpectedly; starting cleanup")
    t0 = time.perf_counter()
    run_with_fake_vllm(tmp_path, "--lengths", "96", "--samples", "2", "--impl", "vllm", "--budget-s", "500")
    took = time.perf_counter() - t0
    (row,) = json.loads((tmp_path / "eval_throughput.json").read_text())["results"]
    assert row["status"] == "error" and "its engine died" in row["error"], row
    assert took < 200, took  # DEAD_GRACE_S (30 s) after the line, plus start-up; not the 500 s budget


def test_eval_throughput_vllm_alone(tmp_path):
    """--impl vllm alone (a vLLM setting measured by itself): its rows and table, none of ours or the peer's."""
    args = ["--lengths", "96", "--samples", "2", "--impl", "vllm", "--vllm-max-capture", "16"]
    done, log = run_with_fake_vllm(tmp_path, *args)
    rows = json.loads((tmp_path / "eval_throughput.json").read_text())["results"]
    assert [(r["impl"], r["status"]) for r in rows] == [("vllm", "ok")]
    assert rows[0]["vllm"]["engine"]["max_num_batched_tokens"] == 16384  # vLLM's own default, nothing passed
    # a start-up setting: graphs captured for batches up to 16 only (the timed batch of 2 replays one of them)
    assert json.loads(log.read_text().splitlines()[0])["compilation_config"] == {"max_cudagraph_capture_size": 16}
    assert rows[0]["vllm"]["engine"]["max_cudagraph_capture_size"] == 16
    assert "| 96 | " in done.stdout and "peer samples/s" not in done.stdout


def test_bench_folders_do_not_shadow_the_libraries_they_measure():
    """bench/ is on sys.path when a bench script runs (and in tests that import from it): a folder there named
    like a library would be found by `import vllm` / find_spec("vllm") as a namespace package, so code that
    asks whether vLLM is installed would be told yes where it is not."""
    import importlib.util

    shadowing = {"vllm", "fla", "torch", "transformers", "lm_eval", "datasets", "flash_attn", "triton", "tilelang"}
    names = {p.name for p in (REPO / "bench").iterdir()} | {p.stem for p in (REPO / "bench").glob("*.py")}
    names -= {"__pycache__", "_common"} | {p.name for p in (REPO / "bench").glob("*.py")}
    assert not names & shadowing
    # and no name of an installed module at all (bench/tabulate.py once hid the tabulate package from lm-eval)
    from importlib.machinery import PathFinder

    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != (REPO / "bench").resolve()]
    taken = {n for n in names if n in sys.builtin_module_names or PathFinder.find_spec(n, elsewhere) is not None}
    assert not taken, f"bench/ names that installed modules also have: {sorted(taken)}"
    sys.path.insert(0, str(REPO / "bench"))
    try:
        for name in ("vllm", "flash_attn"):
            spec = importlib.util.find_spec(name)
            assert spec is None or spec.origin is not None, f"{name}: a namespace package from bench/"
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_train_throughput_packs_documents(tmp_path):
    """--docs N: ours trains on N equal documents per row (cu_seqlens over the flattened batch) and MFU's
    numerator counts attention within a document; the loss differs from the unpacked run of the same tokens."""
    common = ("--configs", "hybrid-tiny", "--lengths", "64", "--steps", "1", "--warmup", "0", "--impl", "ours")
    whole = bench("train_throughput.py", *common, out=tmp_path / "whole")
    again = bench("train_throughput.py", *common, "--docs", "1", out=tmp_path / "again")
    packed = bench("train_throughput.py", *common, "--docs", "3", out=tmp_path / "packed")
    (w,), (a,), (p,) = whole["results"], again["results"], packed["results"]
    assert w["status"] == p["status"] == "ok"
    assert w["loss"] == a["loss"] != p["loss"]  # same seeded weights and tokens; only the documents differ
    from longctx.model import HybridLM, load_config

    counter = HybridLM(load_config("hybrid-tiny"))
    assert w["flops_per_token"] == counter.flops_per_token(64) and p["flops_per_token"] == counter.flops_per_token(21)
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from train_throughput import doc_bounds
    finally:
        sys.path.remove(str(REPO / "bench"))
    import torch

    assert doc_bounds(torch.zeros(2, 64), 3).tolist() == [0, 21, 42, 64, 85, 106, 128]
    assert doc_bounds(torch.zeros(2, 64), 1) is None
    bad = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--docs", "2", "--impl", "ours,peer"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "--docs 2" in bad.stderr


def test_eval_throughput_peer_batches_left_padded(monkeypatch):
    """--peer-batch N: transformers generates N prompts of different lengths per call, left-padded with an
    attention mask; each prompt's greedy tokens equal those of its own batch-1 call (fp32, CPU)."""
    import types

    import torch
    from transformers import AutoModelForCausalLM

    from longctx.model import load_config

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import eval_throughput as et

    CPU = torch.device("cpu")
    torch.manual_seed(0)
    peer = AutoModelForCausalLM.from_config(load_config("hybrid-tiny")).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 4000, (n,), generator=g).tolist() for n in (40, 25, 33)]
    runs = {
        b: et.run_peer(peer, prompts, types.SimpleNamespace(peer_batch=b, warmup=0, max_new_tokens=8), CPU, set())
        for b in (1, 2, 3)
    }
    assert [len(runs[b]["generate_call_s"]) for b in (1, 2, 3)] == [3, 2, 1]
    assert runs[1]["generated"] == runs[2]["generated"] == runs[3]["generated"]
    assert all(len(t) == 8 for t in runs[3]["generated"])


def test_eval_throughput_prefix_sharing_on_both_sides(tmp_path):
    """--share-prefixes (ours prefills shared prefixes once; rows say the share) with --vllm-prefix-caching (vLLM's
    prefix cache on and emptied after the warm-up, before the timed call)."""
    args = ["--lengths", "128", "--samples", "3", "--impl", "ours,vllm", "--share-prefixes", "--vllm-prefix-caching"]
    _, log = run_with_fake_vllm(tmp_path, *args)
    rows = {r["impl"]: r for r in json.loads((tmp_path / "eval_throughput.json").read_text())["results"]}
    assert rows["ours"]["status"] == "ok" and rows["ours"]["shared_tokens"] == 0.0  # random prompts share nothing
    assert rows["ours"]["share_levels"] == [1]  # one call, its prompts' own tokens alone
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0]["enable_prefix_caching"] is True
    assert [list(c) for c in calls[1:]] == [["generate"], ["reset_prefix_cache"], ["generate"]], calls
    assert calls[-1]["generate"] == 3  # the timed call, after the reset
    assert calls[1]["generate"] == 3  # the warm-up: the timed call's prompts (its shapes), as ours warms up
