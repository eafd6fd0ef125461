"""scripts/gpu/kcache.sh, on CPU: the shipped fla autotune results (scripts/gpu/h200-autotune.tgz) are what a
lane on a fresh GPU machine starts with when nothing is carried, and a packed cache restores as it was."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu" / "kcache.sh"


def _kcache(*args, cache):
    env = {"PATH": "/usr/bin:/bin", "LONGCTX_KERNEL_CACHE": str(cache)}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=60)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _script_repo(tmp_path, *scripts, ignored=()):
    """A git repository at tmp_path/repo holding scripts/gpu/<scripts> and parts.sh (which they source)."""
    import shutil

    repo = tmp_path / "repo"
    (repo / "scripts" / "gpu").mkdir(parents=True)
    for name in (*scripts, "parts.sh"):
        shutil.copy(SCRIPT.parent / name, repo / "scripts" / "gpu" / name)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("".join(f"/{d}/\n" for d in ignored))
    return repo


def test_restore_without_a_carried_cache_unpacks_the_shipped_autotune_results(tmp_path):
    empty, cache = tmp_path / "tcache", tmp_path / "kcache"
    empty.mkdir()
    run = _kcache("restore", empty, cache=cache)
    assert run.returncode == 0 and "from h200-autotune.tgz" in run.stdout, run.stderr
    files = _files(cache)
    assert len(files) >= 20
    for name, data in files.items():
        parts = Path(name).parts  # triton/<key>/<kernel>.autotune.json, fla's own layout in Triton's cache
        assert parts[0] == "triton" and len(parts) == 3 and name.endswith(".autotune.json"), name
        json.loads(data)


def test_pack_then_restore_gives_the_cache_back(tmp_path):
    cache, out, again = tmp_path / "kcache", tmp_path / "out", tmp_path / "again"
    (cache / "triton" / "K1").mkdir(parents=True)
    (cache / "triton" / "K1" / "chunk_fwd.autotune.json").write_text('{"configs": [1]}')
    (cache / "inductor").mkdir()
    (cache / "inductor" / "compiled.py").write_text("x = 1\n")
    out.mkdir()
    assert _kcache("pack", out, cache=cache).returncode == 0
    assert [p.name for p in out.iterdir()] == ["kcache.tgz.part0"]
    run = _kcache("restore", out, cache=again)
    assert run.returncode == 0 and "from kcache.tgz.part*" in run.stdout, run.stderr
    got, packed = _files(again), _files(cache)
    assert {k: got[k] for k in packed} == packed  # the cache as it was, plus the shipped autotune results
    assert all(k.endswith(".autotune.json") for k in set(got) - set(packed)) and len(got) > len(packed)


def test_a_whole_cache_travels_in_calls_of_its_own_and_the_shipped_results_fill_its_gaps(tmp_path):
    """arrange (here) puts a poll's parts in .tcache/pK folders that each fit next to the tree; one take call per
    folder (there) gathers them; restore joins them in order and adds the shipped autotune files it lacks,
    without overwriting the cache's own."""
    import io
    import os
    import shutil
    import tarfile

    repo = _script_repo(tmp_path, "kcache.sh", "stage-wheels.sh", "h200-autotune.tgz", ignored=[".tcache"])
    with tarfile.open(SCRIPT.parent / "h200-autotune.tgz") as tf:
        shipped = {m.name.removeprefix("./"): tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    mine = next(iter(shipped))  # one kernel the lane's cache tuned itself: its own result must stay
    cache = {mine: b'{"ours": true}', "inductor/big.bin": os.urandom(3_000_000)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in cache.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    polled = tmp_path / "device"  # what a poll brought back: the cache in parts
    polled.mkdir()
    blob = buf.getvalue()
    for i in range(2):
        (polled / f"kcache.tgz.part{i}").write_bytes(blob[i * 1_600_000 : (i + 1) * 1_600_000])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LONGCTX_CARRY_MIB": "4"}
    run = subprocess.run(["bash", "scripts/gpu/kcache.sh", "arrange", str(polled)], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    folders = sorted((repo / ".tcache").iterdir())
    assert [f.name for f in folders] == ["p0", "p1"] and '[".tcache/p1"]' in run.stdout, run.stdout
    tree = int(subprocess.run(["bash", "scripts/gpu/stage-wheels.sh", "tree"], cwd=repo, env=env,
                              capture_output=True, text=True).stdout)  # fmt: skip
    for f in folders:
        assert tree + sum(x.stat().st_size for x in f.iterdir()) <= 4 * 1048576
    stage, kc = tmp_path / "stage", tmp_path / "kcache"
    there = {**env, "LONGCTX_KCACHE_STAGE": str(stage), "LONGCTX_KERNEL_CACHE": str(kc)}
    for f in reversed(folders):  # one call each, only its folder carried; the order does not matter
        machine = tmp_path / f"call-{f.name}"
        shutil.copytree(f, machine / ".tcache" / f.name)
        run = subprocess.run(["bash", str(repo / "scripts/gpu/kcache.sh"), "take"], cwd=machine, env=there,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stderr
    empty = tmp_path / "no-tcache"  # the lane's call carries no cache of its own
    empty.mkdir()
    run = subprocess.run(["bash", str(repo / "scripts/gpu/kcache.sh"), "restore", str(empty)], env=there,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0 and "(2)" in run.stdout, run.stdout + run.stderr
    got = _files(kc)
    assert got["inductor/big.bin"] == cache["inductor/big.bin"] and got[mine] == cache[mine]
    others = {k: v for k, v in shipped.items() if k != mine}
    assert {k: got.get(k) for k in others} == others


STAGE = SCRIPT.parent / "stage-wheels.sh"


def _stage(*args, cwd, **env):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), **{k: str(v) for k, v in env.items()}}
    return subprocess.run(["bash", str(STAGE), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def test_wheels_staged_in_parts_that_fit_next_to_the_tree_and_join_back(tmp_path):
    import os

    repo = tmp_path / "repo"
    (repo / ".whl_tl").mkdir(parents=True)
    (repo / ".whl").mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/.whl/\n/.whl_tl/\n/.whl_parts/\n")
    (repo / "code.py").write_bytes(os.urandom(300_000))  # the working tree every call carries
    wheels = {".whl_tl/tilelang.whl": os.urandom(1_500_000), ".whl/fla.whl": os.urandom(2_000_000)}
    for name, data in wheels.items():
        (repo / name).write_bytes(data)
    limit = 4 * 1048576
    run = _stage("pack", cwd=repo, LONGCTX_CARRY_MIB=4)
    assert run.returncode == 0, run.stderr
    parts = sorted(p for p in (repo / ".whl_parts").iterdir())
    assert [p.name for p in parts] == [f"p{i}" for i in range(len(parts))] and len(parts) >= 2, run.stdout
    tree = sum(p.stat().st_size for p in [repo / ".gitignore", repo / "code.py"])
    assert int(_stage("tree", cwd=repo).stdout) == tree  # what bench/vllm_peer/fetch-wheels.sh sizes its pieces by
    for p in parts:  # each call: the tree and one part, under the limit
        assert tree + sum(f.stat().st_size for f in p.iterdir()) <= limit
        assert f'[".whl_parts/{p.name}"]' in run.stdout
    # there: one call per part, each with only its part carried, then unpack
    stage = tmp_path / "stage"
    for p in parts:
        there = tmp_path / f"call-{p.name}"
        (there / ".whl_parts").mkdir(parents=True)
        (there / ".whl_parts" / p.name).symlink_to(p)
        assert _stage("take", cwd=there, LONGCTX_WHEEL_STAGE=stage).returncode == 0
    assert _stage("unpack", cwd=tmp_path, LONGCTX_WHEEL_STAGE=stage).returncode == 0
    assert {name: (stage / name).read_bytes() for name in wheels} == wheels


def test_wheel_staging_refuses_what_cannot_fit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    run = _stage("pack", cwd=repo)
    assert run.returncode == 2 and "fetch-wheels.sh" in run.stderr
    (repo / ".whl_tl").mkdir()
    (repo / ".whl").mkdir()
    (repo / ".gitignore").write_text("/.whl/\n/.whl_tl/\n")
    run = _stage("pack", cwd=repo, LONGCTX_CARRY_MIB=2)
    assert run.returncode == 2 and "leaves no room" in run.stderr and not (repo / ".whl_parts").exists()
    assert _stage("unpack", cwd=repo, LONGCTX_WHEEL_STAGE=tmp_path / "none").returncode == 2


COLD = SCRIPT.parent / "cold-start.sh"


@pytest.mark.parametrize("profile", ["0", "1"])
def test_cold_start_reports_each_step_and_the_slowest_imports(tmp_path, profile):
    """scripts/gpu/cold-start.sh on CPU with a tiny config: the run's own metrics come back as step lines (the
    first with startup_s), with the exit code, the wall time and the slowest imports."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: hybrid-tiny\nseq_len: 64\nbatch_size: 1\ndevice: cpu\n")
    repo = SCRIPT.parents[2]
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path),
           "OUT": str(tmp_path / "out"), "COLD_ROOT": str(tmp_path / "root"), "PROFILE": profile}  # fmt: skip
    run = subprocess.run(["bash", str(COLD), str(tmp_path / "none"), str(cfg), "2", "300"], capture_output=True,
                         text=True, env=env, cwd=repo, timeout=400)  # fmt: skip
    report = (tmp_path / "out" / "cold-start.txt").read_text()
    assert run.returncode == 0 and "rc=0 wall_s=" in report, report
    steps = [line for line in report.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and "startup_s" in steps[0] and "startup_s" not in steps[1], report
    assert "from h200-autotune.tgz" in report and "torch" in report.split("slowest imports")[1]
    if profile == "1":  # where the time went, by function
        rows = report.split("most cumulative time (cProfile; s):")[1].strip().splitlines()
        assert rows and all(float(r.split()[0]) >= 0.5 for r in rows), report
        assert any("longctx/cli.py" in r and "(main)" in r for r in rows), report  # the command's own entry
    else:
        assert "most cumulative time" not in report


def test_speed_lane_cells_are_valid_bench_commands(tmp_path, monkeypatch):
    """scripts/gpu/speed-lane.sh DRY=1: every cell is a bench/train_throughput.py command its own parser and
    validation accept (a typo would otherwise cost a lease), each writing under its own folder; ONLY picks cells."""
    root = SCRIPT.parents[2]
    lane = root / "scripts" / "gpu" / "speed-lane.sh"
    env = {"PATH": "/usr/bin:/bin", "DRY": "1"}
    run = subprocess.run(["bash", str(lane), str(tmp_path)], capture_output=True, text=True, env=env, cwd=root)
    assert run.returncode == 0, run.stderr
    named = [line.split("|", 1) for line in run.stdout.splitlines()]
    cmds = [cmd for _, cmd in named]
    assert len(cmds) >= 10 and all(cmd.endswith(f"--out {tmp_path}/{name}") for name, cmd in named)
    sys.path.insert(0, str(root / "bench"))
    try:
        import train_throughput as tt
    finally:
        sys.path.remove(str(root / "bench"))
    monkeypatch.setattr(tt.fla_peer, "missing", lambda device: None)  # fla is on the GPU machine, not here
    sys.path.insert(0, str(root / "bench"))
    try:
        import eval_throughput as et
    finally:
        sys.path.remove(str(root / "bench"))
    outs = set()
    for cmd in cmds:
        words = cmd.split()
        bench = {"bench/train_throughput.py": tt, "bench/eval_throughput.py": et}[words[1]]
        assert words[0] == "python3", cmd
        args = bench.build_parser().parse_args(words[2:])
        bench.validate(args)  # exits on a bad combination
        outs.add(args.out)
    assert sum("eval_throughput" in c for c in cmds) == 2
    assert len(outs) == len(cmds) and all(o.startswith(str(tmp_path) + "/") for o in outs)
    env["ONLY"] = "h16-ckpt,t16-ckpt"
    only = subprocess.run(["bash", str(lane), str(tmp_path)], capture_output=True, text=True, env=env, cwd=root)
    assert [c.split("--out ")[1] for c in only.stdout.splitlines()] == [f"{tmp_path}/h16-ckpt", f"{tmp_path}/t16-ckpt"]


def test_run_steps_runs_parts_side_by_side_and_keeps_going(tmp_path):
    """scripts/gpu/steps.sh: the parts of a step run at once (each with its own log and OUT), a step's rc is its
    worst part's, a step past the limit is killed (rc 124) and the steps after a failed one still run;
    steps.txt gets each step's line and its logs' lines that match the pattern; ONLY and DRY as documented."""
    steps_sh = SCRIPT.parents[2] / "scripts" / "gpu" / "steps.sh"
    out = tmp_path / "w"
    # the two parts wait for each other's file: they finish only when run side by side
    meet = tmp_path / "meet.sh"
    meet.write_text('touch "$OUT/$1"; while [ ! -f "$OUT/$2" ]; do sleep 0.1; done; echo agree "$1"\n')
    steps = [
        f"pair|sh {meet} a b & sh {meet} b a",
        "fails|false",
        "slow|sleep 30",
        "after|echo | done",
    ]
    script = f'. {steps_sh}; run_steps {out} 3 "agree|done" "$@"'
    env = {"PATH": "/usr/bin:/bin"}

    def run(extra_env):
        return subprocess.run(
            ["bash", "-c", script, "lane", *steps], capture_output=True, text=True, env={**env, **extra_env}, timeout=60
        )

    dry = run({"DRY": "1"})
    assert dry.returncode == 0 and not out.exists()
    assert [line.split("|")[0] for line in dry.stdout.splitlines()] == ["pair.0", "pair.1", "fails", "slow", "after"]
    only = run({"DRY": "1", "ONLY": "after,pair,nosuch"})  # ONLY's order; a name with no step: nothing
    assert [line.split("|")[0] for line in only.stdout.splitlines()] == ["after", "pair.0", "pair.1"]
    assert run({"ONLY": "fails"}).returncode == 0
    assert [line.split()[1:3] for line in (out / "steps.txt").read_text().splitlines()] == [["fails", "rc=1"]]
    (out / "steps.txt").unlink()
    run({})
    lines = (out / "steps.txt").read_text().splitlines()
    heads = [line.split()[1:3] for line in lines if " rc=" in line]
    assert heads == [["pair", "rc=0"], ["fails", "rc=1"], ["slow", "rc=124"], ["after", "rc=0"]], lines
    assert "agree a" in lines and "agree b" in lines and "| done" in lines
    assert (out / "pair" / "log0.txt").read_text() == "agree a\n" and (out / "after" / "log.txt").is_file()


def test_vllm_lane_steps_are_valid_commands(tmp_path, monkeypatch):
    """scripts/gpu/vllm-lane.sh DRY=1: every step parses with the parser of what it runs (bench/eval_throughput.py,
    `longctx pretrain|extend`, bench/vllm_peer/smoke.py), the smoke steps name the models the steps before them
    write, and vLLM's side runs with /tmp/vsite first on its path."""
    import importlib

    root = SCRIPT.parents[2]
    env = {"PATH": "/usr/bin:/bin", "DRY": "1"}
    lane = root / "scripts" / "gpu" / "vllm-lane.sh"
    run = subprocess.run(["bash", str(lane), str(tmp_path)], capture_output=True, text=True, env=env, cwd=root)
    assert run.returncode == 0, run.stderr
    steps = dict(line.split("|", 1) for line in run.stdout.splitlines())
    # the trained models side by side first (two parts of one step), then RULER through both backends on them; the
    # speed (measured already; it needs no trained model) after
    order = list(steps)
    assert order[:6] == ["models.0", "models.1", "ruler-longctx", "ruler-vllm", "ruler-paired", "ruler-time"]
    assert order.index("ruler-b1-paired") == order.index("ruler-longctx-b1") + 1  # one prompt per call, then paired
    assert order.index("extend.0") < order.index("smoke-yarn") and order.index("extend.1") < order.index("smoke-drope")
    speed = ["throughput-16k", "throughput-16k-eager", "throughput-64k", "throughput-16k-share", "throughput-16k-peer"]
    assert [n for n in order if n.startswith("throughput-16k") or n == "throughput-64k"] == speed
    assert order.index("throughput-16k") > order.index("ruler-b1-paired")
    # the hybrid trains 1200 steps (what RULER needs to retrieve) unless HYBRID_STEPS says otherwise
    assert "--steps 1200 --out" in steps["models.0"] and "models/hybrid" in steps["models.0"]
    short = subprocess.run(["bash", str(lane), str(tmp_path)], capture_output=True, text=True, cwd=root,
                           env={**env, "HYBRID_STEPS": "300", "ONLY": "models"})  # fmt: skip
    assert dict(ln.split("|", 1) for ln in short.stdout.splitlines())["models.0"] == steps["models.0"].replace(
        "--steps 1200", "--steps 300"
    )
    # vLLM never shares the GPU with another process (its start-up memory profile fails when one frees memory)
    starts_vllm = ("bench/vllm_peer/smoke.py", "-m longctx eval", "bench/eval_throughput.py")  # RULER timed alone too
    assert not any("." in n and any(s in c for s in starts_vllm) for n, c in steps.items())
    # eval_throughput stops a vLLM still starting before the step's limit (540 s) would, keeping its row and log
    starts = [c for c in steps.values() if "eval_throughput.py" in c and "vllm" in c.split("--impl ")[1].split()[0]]
    budgets = [int(c.split("--budget-s ")[1].split()[0]) for c in starts]
    assert budgets and all(0 < b < 540 for b in budgets)
    sys.path.insert(0, str(root / "bench"))
    try:
        import eval_throughput as et

        spec = importlib.util.spec_from_file_location("vllm_smoke", root / "bench" / "vllm_peer" / "smoke.py")
        smoke = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(smoke)
    finally:
        sys.path.remove(str(root / "bench"))
    from longctx.cli import COMMANDS

    written = set()
    for name, cmd in steps.items():
        words = cmd.split()
        if words[:2] == ["bash", "scripts/gpu/vllm-capture.sh"]:  # retry/adapt PREV_DIR, then the command itself
            assert words[2] in ("retry", "adapt") and words[3] == str(tmp_path / "throughput-16k"), cmd
            words = words[4:] + ["--vllm-enforce-eager"]
        vllm_side = words[0] == "env"
        if vllm_side:  # vLLM's side: /tmp/vsite first on the path
            assert words[1].startswith("PYTHONPATH=/tmp/vsite:"), cmd
            words = words[2:]
        if "scripts/gpu/test-gpu.sh" in words:  # the whole GPU suite as a step: its limit under the step's
            assert vllm_side and words[:2] == ["TEST_GPU_NO_PACK=1", f"LONGCTX_VLLM_MODEL={tmp_path}/models/hybrid"]
            assert words[2:4] == ["bash", "scripts/gpu/test-gpu.sh"] and 0 < int(words[4]) < 540, cmd
            assert words[1].split("=", 1)[1] in written and (root / words[3]).is_file(), cmd
            continue
        if words[:2] == ["python3", "bench/eval_throughput.py"]:
            args = et.build_parser().parse_args(words[2:])
            et.validate(args)
            assert "vllm" in args.impl or name == "throughput-16k-peer", cmd
            assert "vllm" not in args.impl or args.vllm_python == "/tmp/vsite-python"
        elif words[:3] == ["python3", "-m", "longctx"]:
            parser = __import__("argparse").ArgumentParser()
            importlib.import_module(COMMANDS[words[3]][0]).add_arguments(parser)
            args = parser.parse_args(words[4:])
            if words[3] in ("extend", "eval"):
                assert args.model in written, (name, args.model)
            if words[3] == "eval":
                assert vllm_side and args.backend in ("longctx", "vllm"), cmd
            if words[3] == "answers":
                assert args.results in written and args.against in written, cmd
            if getattr(args, "out", None):
                written.add(args.out)
        elif words[:5] == ["python3", "-m", "pytest", "-m", "gpu"]:  # GPU tests of ours (files, file::test)
            tests = [w.split("::") for w in words[5:] if not w.startswith("-")]
            assert not vllm_side and tests and all((root / t[0]).is_file() for t in tests), cmd
            assert all(len(t) == 1 or f"def {t[1]}(" in (root / t[0]).read_text() for t in tests), cmd
        elif words[0].startswith("LONGCTX_VLLM_MODEL="):  # the GPU test on a model a step before trained
            assert vllm_side and words[0].split("=", 1)[1] in written, cmd
            assert words[1:5] == ["python3", "-m", "pytest", "-m"] and (root / words[-1]).is_file(), cmd
        else:
            assert vllm_side and words[:2] == ["python3", "bench/vllm_peer/smoke.py"] and words[2] in written, cmd
            Path(words[2]).mkdir(parents=True, exist_ok=True)
            (Path(words[2]) / "config.json").write_text("{}")
            assert smoke.parse_args(words[3:] + [words[2]]).against_longctx
    smoked = {Path(c.split()[4]).name for c in steps.values() if "bench/vllm_peer/smoke.py" in c}
    assert smoked == {"hybrid", "yarn", "drope", "transformer"}


KEEP = SCRIPT.parent / "keep.sh"


def _keep(*args, cwd, **env):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), **{k: str(v) for k, v in env.items()}}
    cmd = ["bash", str(KEEP), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def _trained_run(d: Path, weights: bytes) -> None:
    """What `longctx pretrain` leaves in a finished run directory (the files train_done reads), and checkpoints."""
    (d / "checkpoints" / "step_10").mkdir(parents=True)
    (d / "checkpoints" / "step_10" / "optim.pt").write_bytes(b"x" * 1000)
    (d / "config.json").write_text("{}")
    (d / "metrics.jsonl").write_text('{"step": 10}\n')
    (d / "model.safetensors").write_bytes(weights)
    (d / "longctx_train.json").write_text('{"steps": 10}')


def test_kept_runs_come_home_in_polls_and_are_restored_on_the_next_machine(tmp_path):
    """keep.sh: a lane's finished runs (KEEP) come back one per poll without their checkpoints, are arranged in
    parts that fit next to the working tree, and a fresh machine's lane starts with them in place, done for the
    study (longctx.study.state.train_done) and with the evaluation files the last x.tgz held."""
    import os
    import tarfile

    from longctx.study.state import train_done

    lane, hybrid, transformer = tmp_path / "w", "budget/hybrid-s0/base", "gate/transformer-s0/base"
    (lane / "logs").mkdir(parents=True)
    (lane / "logs" / "keep").write_text(f"{transformer} {hybrid}\n")
    weights = {hybrid: os.urandom(1_200_000), transformer: os.urandom(1_200_000)}
    (lane / transformer).mkdir(parents=True)  # still training: no export yet
    _trained_run(lane / hybrid, weights[hybrid])
    polls = [tmp_path / f"out{i}" for i in range(3)]
    for p in polls:
        p.mkdir()
    run = _keep("pack", polls[0], cwd=tmp_path, LANE=lane)
    assert run.returncode == 0 and f"keep: {hybrid} in 1 part(s)" in run.stdout, run.stderr
    assert _keep("pack", polls[1], cwd=tmp_path, LANE=lane).stdout == ""  # sent once; the other not done
    _trained_run(lane / transformer, weights[transformer])
    (lane / hybrid / "gate.json").write_text('{"passed": true}')  # written after the hybrid was packed
    (lane / hybrid / "metrics.jsonl").write_text("changed\n")
    assert transformer in _keep("pack", polls[2], cwd=tmp_path, LANE=lane).stdout
    (lane / hybrid / ".longctx.lock").write_text('{"pid": 1, "host": "old-machine"}')  # an evaluation's, in flight
    with tarfile.open(polls[2] / "x.tgz", "w:gz") as t:  # poll.sh's x.tgz: /tmp/w without weights or checkpoints
        for rel in ("gate.json", "metrics.jsonl", ".longctx.lock"):
            t.add(lane / hybrid / rel, arcname=f"w/{hybrid}/{rel}")

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/.lane_restore/\n")
    (repo / "code.py").write_bytes(os.urandom(300_000))
    run = _keep("arrange", *polls, cwd=repo, LONGCTX_CARRY_MIB=4)
    assert run.returncode == 0 and "keep: 2 kept run(s) in 2 part(s)" in run.stdout, (run.stdout, run.stderr)
    tree = sum(p.stat().st_size for p in [repo / ".gitignore", repo / "code.py"])
    parts = sorted((repo / ".lane_restore").iterdir())
    for p in parts:
        assert tree + sum(f.stat().st_size for f in p.iterdir()) <= 4 * 1048576
        assert f'[".lane_restore/{p.name}"]' in run.stdout
    stage = tmp_path / "stage"
    for p in parts:  # one call per part on the next machine
        there = tmp_path / f"call-{p.name}"
        (there / ".lane_restore").mkdir(parents=True)
        (there / ".lane_restore" / p.name).symlink_to(p)
        assert _keep("take", cwd=there, LONGCTX_RESTORE=stage).returncode == 0
    fresh = tmp_path / "fresh" / "w"
    run = _keep("restore", cwd=tmp_path, LANE=fresh, LONGCTX_RESTORE=stage)
    assert run.returncode == 0 and f"keep: restored {hybrid}" in run.stdout and transformer in run.stdout, run.stderr
    for d in (hybrid, transformer):
        assert train_done(fresh / d) and (fresh / d / "model.safetensors").read_bytes() == weights[d]
        assert not (fresh / d / "checkpoints").exists() and not (fresh / d / ".longctx.lock").exists()
    assert (fresh / hybrid / "gate.json").read_text() == '{"passed": true}'  # from x.tgz
    assert (fresh / hybrid / "metrics.jsonl").read_text() == '{"step": 10}\n'  # the kept archive's, not overwritten


def test_plan_lists_the_calls_in_order_and_refuses_parts_that_outgrew_the_tree(tmp_path):
    """plan.sh: wheel parts first, then the kernel cache's take calls, the lane started by the last wheel part;
    a part that no longer fits beside the tree is named with the command that remakes it (exit 2)."""
    import os

    repo = _script_repo(tmp_path, "plan.sh", "stage-wheels.sh", ignored=[".whl_parts", ".tcache", ".vllm_parts"])
    (repo / "code.py").write_bytes(os.urandom(1_000_000))
    for part, size in ((".whl_parts/p0", 1_500_000), (".whl_parts/p1", 600_000), (".tcache/p0", 1_000_000)):
        (repo / part).mkdir(parents=True)
        (repo / part / "blob").write_bytes(os.urandom(size))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LONGCTX_CARRY_MIB": "3"}

    def plan(*args, **extra):
        return subprocess.run(["bash", "scripts/gpu/plan.sh", *args], cwd=repo, env={**env, **extra},
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    run = plan("study", "python3 -m longctx study s.yaml --out /tmp/w/s", KEEP="s/hybrid-s0/base")
    assert run.returncode == 0, run.stderr
    lines = [ln for ln in run.stdout.splitlines() if ln[:1].isdigit()]
    assert [ln.split(":", 1)[0] for ln in lines] == ['1. carry [".whl_parts/p0"]', '2. carry [".tcache/p0"]',
                                                    '3. carry [".whl_parts/p1"]']  # fmt: skip
    assert lines[0].endswith("stage-wheels.sh take") and lines[1].endswith("kcache.sh take")
    assert "stage-wheels.sh install" in lines[2]
    assert 'KEEP="s/hybrid-s0/base" bash scripts/gpu/start-lane.sh' in lines[2]
    assert '"python3 -m longctx study s.yaml --out /tmp/w/s"' in lines[2] and "poll.sh" in run.stdout

    # the speed and vllm lanes take ONLY / STEP_LIMIT into their command (a step list with a space is refused)
    run = plan("speed", ONLY="h16-ckpt,t16-ckpt", STEP_LIMIT="400")
    assert run.returncode == 0, run.stderr
    assert '"ONLY=h16-ckpt,t16-ckpt STEP_LIMIT=400 bash scripts/gpu/speed-lane.sh /tmp/w/speed"' in run.stdout
    assert "ONLY=" not in plan("speed").stdout
    # HYBRID_STEPS goes to the vllm lane alone (the speed lane trains no hybrid to cut)
    (repo / ".vllm_parts" / "00").mkdir(parents=True)
    (repo / ".vllm_parts" / "00" / "part").write_bytes(os.urandom(100_000))
    run = plan("vllm", ONLY="models", HYBRID_STEPS="300")
    assert run.returncode == 0, run.stderr
    assert '"ONLY=models HYBRID_STEPS=300 bash scripts/gpu/vllm-lane.sh /tmp/w/vllm"' in run.stdout
    assert "HYBRID_STEPS" not in plan("speed", HYBRID_STEPS="300").stdout
    assert plan("vllm", HYBRID_STEPS="3 0").returncode == 2
    bad = plan("speed", ONLY="a b")
    assert bad.returncode == 2 and "ONLY=a b" in bad.stderr and bad.stdout == ""

    (repo / "code.py").write_bytes(os.urandom(1_700_000))  # the tree grew: p0 (1.5 MB) no longer fits in 3 MiB
    run = plan("speed")
    assert run.returncode == 2 and ".whl_parts/p0" in run.stderr and "stage-wheels.sh pack" in run.stderr
    assert run.stdout == ""
    assert plan("vllm").returncode == 2 and plan("nonsense").returncode == 2


def test_arrange_takes_an_older_flat_tcache_as_its_source_without_losing_it(tmp_path):
    import os

    repo = _script_repo(tmp_path, "kcache.sh", "stage-wheels.sh", "plan.sh", ignored=[".tcache", ".whl_parts"])
    (repo / ".whl_parts" / "p0").mkdir(parents=True)
    (repo / ".whl_parts" / "p0" / "w").write_bytes(b"w")
    parts = {f"kcache.tgz.part{i}": os.urandom(700_000) for i in range(3)}
    (repo / ".tcache").mkdir()
    for name, data in parts.items():
        (repo / ".tcache" / name).write_bytes(data)
        (repo / ".tcache" / name).chmod(0o444)  # as the files of a poll come back: read-only
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LONGCTX_CARRY_MIB": "4"}

    def sh(*args):
        return subprocess.run(["bash", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60)

    run = sh("scripts/gpu/plan.sh", "speed")  # a flat cache no call would carry
    assert run.returncode == 2 and "kcache.sh arrange .tcache" in run.stderr
    before = _files(repo / ".tcache")
    env["LONGCTX_CARRY_MIB"] = "2"  # no part fits beside the tree: refused, .tcache as it was
    run = sh("scripts/gpu/kcache.sh", "arrange", ".tcache")
    assert run.returncode == 2 and "does not fit next to the tree" in run.stderr and _files(repo / ".tcache") == before
    env["LONGCTX_CARRY_MIB"] = "4"
    run = sh("scripts/gpu/kcache.sh", "arrange", ".tcache")
    assert run.returncode == 0, run.stderr
    got = {p.name: p.read_bytes() for p in (repo / ".tcache").glob("p*/kcache.tgz.part*")}
    assert got == parts and not list((repo / ".tcache").glob("kcache.tgz*"))
    assert sh("scripts/gpu/plan.sh", "speed").returncode == 0


def test_share_lane_steps_are_valid_commands(tmp_path):
    """scripts/gpu/share-lane.sh DRY=1: the GPU test file exists and both throughput steps parse with
    bench/eval_throughput.py's parser, the same but for --share-prefixes."""
    root = SCRIPT.parents[2]
    run = subprocess.run(
        ["bash", str(root / "scripts" / "gpu" / "share-lane.sh"), str(tmp_path)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "DRY": "1"}, cwd=root,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    steps = dict(line.split("|", 1) for line in run.stdout.splitlines())
    assert list(steps) == ["pytest-shared", "plain", "shared"]
    assert (root / steps["pytest-shared"].split()[-1]).is_file()
    sys.path.insert(0, str(root / "bench"))
    try:
        import eval_throughput as et
    finally:
        sys.path.remove(str(root / "bench"))
    parsed = {}
    for name in ("plain", "shared"):
        words = steps[name].split()
        assert words[:2] == ["python3", "bench/eval_throughput.py"]
        parsed[name] = vars(et.build_parser().parse_args(words[2:]))
    assert parsed["shared"].pop("share_prefixes") and not parsed["plain"].pop("share_prefixes")
    assert parsed["plain"].pop("out") != parsed["shared"].pop("out") and parsed["plain"] == parsed["shared"]


def test_vllm_capture_retries_and_adapts_after_a_vllm_start_that_did_not_run(tmp_path):
    """scripts/gpu/vllm-capture.sh: `retry` runs its command (with --vllm-enforce-eager) only when the earlier step's
    vLLM row did not run; `adapt` always runs it, adding the flag in that case."""
    script = SCRIPT.parent / "vllm-capture.sh"
    prev = tmp_path / "prev"
    prev.mkdir()

    def run(mode, status):
        rows = [{"impl": "ours", "status": "ok"}] + ([{"impl": "vllm", "status": status}] if status else [])
        (prev / "eval_throughput.json").write_text(json.dumps({"results": rows}))
        done = subprocess.run(["bash", str(script), mode, str(prev), "echo", "CMD", "--x"], capture_output=True,
                              text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if line.startswith("CMD")]

    assert run("retry", "ok") == []
    assert run("retry", "error") == run("retry", None) == ["CMD --x --vllm-enforce-eager"]
    assert run("adapt", "ok") == ["CMD --x"]
    assert run("adapt", "error") == ["CMD --x --vllm-enforce-eager"]
    (prev / "eval_throughput.json").unlink()  # the earlier step left nothing: vLLM did not run
    done = subprocess.run(["bash", str(script), "adapt", str(prev), "echo", "CMD"], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "CMD --vllm-enforce-eager"
    assert subprocess.run(["bash", str(script), "bogus", str(prev), "echo"], capture_output=True).returncode == 2
    gone = tmp_path / "never-ran"  # the earlier step left out of the lane (ONLY=): nothing says compiled fails
    for mode, want in (("adapt", ["CMD"]), ("retry", [])):
        done = subprocess.run(["bash", str(script), mode, str(gone), "echo", "CMD"], capture_output=True, text=True)
        assert done.returncode == 0 and [x for x in done.stdout.splitlines() if x.startswith("CMD")] == want
    assert subprocess.run(["bash", str(script), "bogus", str(gone), "echo"], capture_output=True).returncode == 2


def _fake_gpu_suite(tmp_path, shard_sleep: float, seconds: int, **env):
    """scripts/gpu/test-gpu.sh SECONDS 2 over a fake suite: 4 gpu tests sleeping shard_sleep s each, one gpu_alone
    test and one CPU test; returns (the summary, [(note, time)] the tests wrote)."""
    import shutil

    repo = tmp_path / "repo"
    (repo / "scripts" / "gpu").mkdir(parents=True)
    for name in ("test-gpu.sh", "lane-env.sh", "kcache.sh"):
        shutil.copy(SCRIPT.parent / name, repo / "scripts" / "gpu" / name)
    (repo / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmarkers = ["gpu: g", "gpu_alone: a"]\n')  # fmt: skip
    log = tmp_path / "log"
    (repo / "tests").mkdir()
    (repo / "tests" / "test_x.py").write_text(f"""
import os, time, pytest
LOG = {str(log)!r}
def _note(what):
    with open(LOG, "a") as f:
        f.write(f"{{what}} {{time.time()}}\\n")
@pytest.mark.gpu
@pytest.mark.parametrize("k", range(4))
def test_shard(k):
    _note("start"); time.sleep({shard_sleep}); _note("end")
@pytest.mark.gpu
@pytest.mark.gpu_alone
def test_alone():
    _note("alone")
def test_cpu():
    raise AssertionError("not a GPU test")
""")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OUT": str(tmp_path / "out"),
           "TEST_GPU_NO_PACK": "1", "LONGCTX_KERNEL_CACHE": str(tmp_path / "kc"), **env}  # fmt: skip
    run = subprocess.run(["bash", "scripts/gpu/test-gpu.sh", str(seconds), "2"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    notes = [(w, float(t)) for w, t in (line.split() for line in log.read_text().splitlines())]
    return (tmp_path / "out" / "gpu-tests.txt").read_text(), notes


def test_test_gpu_runs_gpu_alone_tests_after_the_shards(tmp_path):
    """scripts/gpu/test-gpu.sh: the gpu tests in shards side by side, then those marked gpu_alone with no shard
    left running (vLLM's engine asks for a share of the card free at its start), every one in the summary."""
    summary, notes = _fake_gpu_suite(tmp_path, shard_sleep=0.5, seconds=120, ALONE_S="20")
    ends = [t for w, t in notes if w == "end"]
    (alone,) = [t for w, t in notes if w == "alone"]
    assert len(ends) == 4 and alone > max(ends), notes
    assert "GPU tests: 4 in 2 shards and 1 alone" in summary, summary
    assert summary.count("rc=0") == 3 and "1 passed" in summary and "FAILED" not in summary, summary


def test_test_gpu_keeps_time_for_the_gpu_alone_tests(tmp_path):
    """Shards still busy (a fresh machine compiling) stop ALONE_S before the limit, so the gpu_alone tests run:
    a 580 s run on a fresh H200 left vLLM's test 1 s."""
    summary, notes = _fake_gpu_suite(tmp_path, shard_sleep=300, seconds=60, ALONE_S="25", TEST_GPU_NO_PACK="")
    assert [w for w, _ in notes].count("end") == 0 and [w for w, _ in notes].count("alone") == 1, notes
    assert summary.count("rc=124") == 2 and "## shard -alone: rc=0" in summary, summary
    # the killed shards wrote no junit XML: their logs are packed all the same, none left loose
    assert {"shard0.log", "shard1.log", "shard0.rc", "shard-alone.log"} <= _packed_logs(tmp_path / "out")


def _packed_logs(out) -> set:
    """The names in OUT/logs.tgz, after checking that OUT holds at most 8 files and no loose log, XML, ids or rc."""
    import tarfile

    names = sorted(p.name for p in out.iterdir())
    assert "logs.tgz" in names and "gpu-tests.txt" in names and len(names) <= 8, names
    assert not [n for n in names if n.endswith((".log", ".xml", ".rc", ".ids"))], names
    with tarfile.open(out / "logs.tgz") as tar:
        return set(tar.getnames())


def test_test_gpu_packs_the_logs_into_one_file(tmp_path):
    """A device call brings back 8 files of $OUT: run on its own (not a lane's step), the shards' logs, junit XML,
    ids and rc files end up in logs.tgz beside the summary and the kernel cache's parts."""
    summary, _ = _fake_gpu_suite(tmp_path, shard_sleep=0.1, seconds=120, ALONE_S="20", TEST_GPU_NO_PACK="")
    packed = _packed_logs(tmp_path / "out")
    assert {"shard0.log", "shard1.log", "shard-alone.log", "shard0.rc", "gpu-tests.ids"} <= packed, packed
    assert "rc=0" in summary
