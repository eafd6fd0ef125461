"""`longctx study` (longctx.study): the stage plan, skip/resume detection, --only, the retrieval gate (fast), and the
whole CPU smoke study end to end plus a rerun that skips everything (slow: ~4 CPU-minutes)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from longctx import results, study
from longctx.cli import main as cli_main
from longctx.study import runner

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "experiments" / "study-tiny.yaml"
ARCHS = ("hybrid", "transformer")
METHODS = ("none", "pi", "yarn", "drope")


def study_main(argv: list[str]) -> int:
    try:
        return cli_main(["study", *argv])
    except SystemExit as e:  # argparse's own errors (one line, exit 2) leave this way
        return e.code


def _tiny(out: Path) -> dict:
    s = study.load_study(str(TINY))
    s["out"] = str(out)
    return s


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_studies_resolve_to_valid_run_configs(path):
    from longctx.config import from_dict, validate
    from longctx.model import load_config

    s = study.load_study(str(path))
    assert study.plan(s)
    for arch, spec in s["models"].items():
        validate(from_dict(study.pretrain_config(s, arch)))
        load_config(spec["model"], **spec.get("override", {}))
    for name in s["extend"]["methods"]:
        cfg = from_dict(study.extend_config(s, name))
        validate(cfg)
        assert cfg.extend.method == study.variant(s, name)[0] and cfg.extend.target == s["extend"]["target"]


def test_plan_order_and_commands(tmp_path):
    stages = study.plan(_tiny(tmp_path))
    want = []
    for a in ARCHS:
        want += [f"pretrain-{a}", f"eval-base-{a}"]
        for m in METHODS:
            want += [f"extend-{a}-{m}", f"eval-{a}-{m}"]
    assert [s.name for s in stages] == want + ["compare"]
    ext = next(s for s in stages if s.name == "extend-transformer-yarn")
    assert ext.cmd[1:4] == ["-m", "longctx", "extend"]
    assert ext.cmd[ext.cmd.index("--model") + 1] == str(tmp_path / "transformer" / "base")
    ev = next(s for s in stages if s.name == "eval-hybrid-drope")
    assert ev.cmd[ev.cmd.index("--lengths") + 1] == "512,1024"
    assert len(stages[-1].inputs) == 10 and all(str(p) in stages[-1].cmd for p in stages[-1].inputs)


def test_generated_configs_share_budgets(tmp_path):
    s = _tiny(tmp_path)
    ext = {m: study.extend_config(s, m) for m in METHODS}
    for m, cfg in ext.items():
        assert cfg["extend"] == {**cfg["extend"], "method": m, "target": 1024}
        assert (cfg["steps"], cfg["batch_size"], cfg["grad_accum"]) == (2, 1, 1)
        assert cfg["optimizer"] == ext["none"]["optimizer"]
    h, t = study.pretrain_config(s, "hybrid"), study.pretrain_config(s, "transformer")
    assert h["model"]["model_type"] == "olmo_hybrid" and t["model"]["model_type"] == "olmo3"
    assert t["model"]["intermediate_size"] == 448 and h["seq_len"] == t["seq_len"] == 512
    assert {k: v for k, v in h.items() if k != "model"} == {k: v for k, v in t.items() if k != "model"}


def test_status_new_resume_done(tmp_path):
    stages = {s.name: s for s in study.plan(_tiny(tmp_path))}
    pre, ev = stages["pretrain-hybrid"], stages["eval-base-hybrid"]
    assert study.status(pre) == "new" and study.status(ev) == "new"
    pre.out.mkdir(parents=True)
    (pre.out / "metrics.jsonl").write_text("{}\n")
    assert study.status(pre) == "resume"
    (pre.out / "config.json").write_text("{}")
    (pre.out / "model.safetensors").write_bytes(b"x")
    assert study.status(pre) == "resume"  # no longctx_train.json: the export did not finish
    (pre.out / "longctx_train.json").write_text(json.dumps({"steps": 4}))
    assert study.status(pre) == "done"
    ev.out.write_text("not json")
    assert study.status(ev) == "new"
    r = results.new_results(model="m", rope_parameters=None, tasks=["niah_single_1", "ruler_vt"], lengths=[512],
                            backend="longctx", chat_template=False, samples=1, haystack="bundled",
                            lm_eval_version="0")  # fmt: skip
    results.set_score(r, "niah_single_1", 512, 100.0, 1)
    results.set_unavailable(r, "ruler_vt", 512, results.NOT_FINISHED)  # `longctx eval --finished-only`
    results.save(r, ev.out)
    assert study.status(ev) == "new"  # rerun: it resumes from its journal
    results.set_unavailable(r, "ruler_vt", 512, "offline")
    results.save(r, ev.out)
    assert study.status(ev) == "done"


def _results(path: Path, score: float) -> None:
    r = results.new_results(
        model="m",
        rope_parameters=None,
        tasks=["niah_single_1"],
        lengths=[512],
        backend="longctx",
        chat_template=False,
        samples=1,
        haystack="bundled",
        lm_eval_version="0",
    )
    results.set_score(r, "niah_single_1", 512, score, 1)
    results.save(r, path)


def test_gate(tmp_path):
    s = _tiny(tmp_path)
    s["gate"]["min"] = 80
    st = {x.name: x for x in study.plan(s)}
    ev = st["eval-base-hybrid"]
    ev.out.parent.mkdir(parents=True)
    _results(ev.out, 75.0)
    assert "niah_single_1@512=75.0" in study.gate_check(s, ev)
    _results(ev.out, 80.0)
    assert study.gate_check(s, ev) is None
    assert study.gate_check(s, st["eval-base-transformer"]) is None  # not gated


@pytest.mark.parametrize("samples", [None, 100])
def test_results_md_opens_with_the_gates_outcome(tmp_path, samples):
    """The compare stage puts the gate's scores and verdict above the tables, from the file that decided."""
    s = _tiny(tmp_path)
    s["gate"]["min"] = 80
    if samples:
        s["gate"]["samples"] = samples
    compare = {x.name: x for x in study.plan(s)}["compare"]
    assert "hybrid: not measured" in compare.preamble()
    deciding = tmp_path / "hybrid" / "base" / ("gate.json" if samples else "ruler.json")
    deciding.parent.mkdir(parents=True)
    _results(deciding, 98.0)
    text = compare.preamble()
    assert text.startswith("Retrieval gate: each of niah_single_1 >= 80 at 512")
    assert (f"({samples} samples per task)" if samples else "(the base row)") in text
    assert f"- hybrid: 98: passes (base/{deciding.name})" in text and "transformer" not in text
    _results(deciding, 60.0)
    assert "- hybrid: 60: **misses**" in compare.preamble()
    s["gate"]["models"] = []
    assert compare.preamble() == ""


def test_gate_with_its_own_samples(tmp_path):
    """gate.samples: a gate stage measures only the gate tasks at the gate length with that many
    samples (at 20 samples a task's score moves about 9 points between equal models); the gate reads
    that file instead of the base row, the extensions wait for it, and its file is not a table row."""
    s = _tiny(tmp_path)
    s["gate"].update(min=80, samples=100)
    st = {x.name: x for x in study.plan(s)}
    g = st["gate-hybrid"]
    assert "gate-transformer" not in st  # only the gated models
    assert g.kind == "gate" and g.needs == ["pretrain-hybrid"] and g.arch == "hybrid"
    opt = lambda name: g.cmd[g.cmd.index(name) + 1]  # noqa: E731
    assert (opt("--samples"), opt("--lengths"), opt("--tasks")) == ("100", "512", "niah_single_1")
    assert opt("--model") == str(tmp_path / "hybrid" / "base") and g.out == tmp_path / "hybrid" / "base" / "gate.json"
    assert "gate-hybrid" in st["extend-hybrid-yarn"].needs and "gate-hybrid" not in st["extend-transformer-yarn"].needs
    assert g.out not in st["compare"].inputs and "gate-hybrid" not in st["compare"].needs
    ev = st["eval-base-hybrid"]
    assert g.cmd[g.cmd.index("--tasks") + 2 :] == ev.cmd[ev.cmd.index("--tasks") + 2 :]  # same device and eval args
    ev.out.parent.mkdir(parents=True)
    _results(ev.out, 10.0)
    assert study.gate_check(s, ev) is None  # the base row no longer decides
    _results(g.out, 75.0)
    assert "niah_single_1@512=75.0" in study.gate_check(s, g)
    _results(g.out, 85.0)
    assert study.gate_check(s, g) is None
    assert [x.name for x in study.select(study.plan(s), "gate")] == ["gate-hybrid"]

    path = tmp_path / "study.yaml"
    base = yaml.safe_load(TINY.read_text())
    for bad in (0, "many", True):
        path.write_text(yaml.safe_dump({**base, "gate": {**base["gate"], "samples": bad}}))
        with pytest.raises(study.StudyError, match="gate.samples"):
            study.load_study(str(path))


def test_only_and_dry_run(tmp_path, capsys):
    stages = study.plan(_tiny(tmp_path))
    assert [s.name for s in study.select(stages, "extend-*-yarn,compare")] == [
        "extend-hybrid-yarn",
        "extend-transformer-yarn",
        "compare",
    ]
    assert {s.kind for s in study.select(stages, "eval-base")} == {"eval-base"}
    assert [s.name for s in study.select(stages, "*-hybrid-*,!eval*,!*-pi")] == [
        "extend-hybrid-none",
        "extend-hybrid-yarn",
        "extend-hybrid-drope",
    ]
    rest = study.select(stages, "!*-transformer*,!compare")
    assert rest and all("transformer" not in s.name and s.kind != "compare" for s in rest)
    assert len(rest) == len([s for s in stages if "transformer" not in s.name]) - 1
    for bad in ("bogus", "!bogus"):
        with pytest.raises(study.StudyError, match=bad):
            study.select(stages, bad)
    assert study_main([str(TINY), "--out", str(tmp_path), "--dry-run", "--only", "pretrain"]) == 0
    out = capsys.readouterr().out
    assert "# pretrain-hybrid: new" in out and "longctx pretrain --config" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.slow
def test_tiny_study_end_to_end_then_skips(tmp_path):
    cmd = [sys.executable, "-m", "longctx", "study", str(TINY), "--out", str(tmp_path)]
    first = subprocess.run(cmd + ["--jobs", "2"], cwd=REPO, capture_output=True, text=True)  # stages 2 at a time
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "logs" / "eval-hybrid-drope.log").stat().st_size > 0
    for a in ARCHS:
        for run in ("base",) + METHODS:
            results.load(tmp_path / a / run / "ruler.json")
    assert "| hybrid drope |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "ruler.png").stat().st_size > 0
    n_log = len((tmp_path / "study_log.jsonl").read_text().splitlines())
    assert n_log == 21

    # a finished run: nothing is run again
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0
    assert again.stdout.count("done, skipped") == 21
    assert len((tmp_path / "study_log.jsonl").read_text().splitlines()) == n_log

    # an unfinished export (no longctx_train.json): that stage alone resumes from its checkpoint
    (tmp_path / "hybrid" / "base" / "longctx_train.json").unlink()
    third = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "pretrain-hybrid: resuming" in third.stdout and third.stdout.count("done, skipped") == 20
    assert study.train_done(tmp_path / "hybrid" / "base")


@pytest.mark.parametrize("kind,marker", [("pretrain", "SIGTERM"), ("eval", "SIGINT")])
def test_time_budget_stops_the_stage_in_flight_where_it_resumes(tmp_path, capsys, kind, marker):
    """At the deadline a training stage gets SIGTERM (it checkpoints its step), an eval stage SIGINT
    (it keeps its journal, and the runner names the command that reads its finished cells); the runner
    logs it and raises OutOfTime (main() exits 75)."""
    import io
    import time

    script = (
        "import signal, sys, time\n"
        "def stop(signum, frame):\n"
        f"    open({str(tmp_path / 'got')!r}, 'w').write(signal.Signals(signum).name)\n"
        "    sys.exit(128 + signum)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "time.sleep(60)\n"
    )
    stage = study.Stage("fake", kind, [sys.executable, "-c", script], tmp_path / "out")
    log = io.StringIO()
    t0 = time.time()
    with pytest.raises(study.OutOfTime):
        study.run_stage(stage, "new", log, deadline=time.time() + 1.5)
    assert time.time() - t0 < 30
    assert (tmp_path / "got").read_text() == marker
    row = json.loads(log.getvalue())
    assert row["out_of_time"] is True and row["rc"] == 128 + getattr(__import__("signal"), marker)
    out = capsys.readouterr().out
    want = f"study: fake: stopped; the results of its finished cells: {shlex.join(stage.cmd)} --finished-only\n"
    assert (want in out) == (kind == "eval") and out.count("finished cells") == (kind == "eval")


def test_no_time_left_starts_nothing(tmp_path, capsys):
    assert study_main([str(TINY), "--out", str(tmp_path / "s"), "--time-budget", "0"]) == 75
    assert "no time left to start pretrain-hybrid" in capsys.readouterr().err
    assert not (tmp_path / "s" / "hybrid").exists()


def _fake(tmp_path, name, kind, arch, needs=(), rc=0, sleep=0.6):
    """A stage that records when it ran and on which device, then exits rc."""
    rec = tmp_path / f"{name}.json"
    script = (
        "import json, os, sys, time\n"
        "t0 = time.time()\n"
        f"time.sleep({sleep})\n"
        "rec = {'t0': t0, 't1': time.time(), 'dev': os.environ.get('CUDA_VISIBLE_DEVICES')}\n"
        f"json.dump(rec, open({str(rec)!r}, 'w'))\n"
        f"print('ran {name}')\n"
        f"sys.exit({rc})\n"
    )
    return study.Stage(name, kind, [sys.executable, "-c", script], tmp_path / name, arch, needs=list(needs))


def test_parallel_stages_respect_needs_devices_and_the_gate(tmp_path, capsys):
    import io

    stages = [
        _fake(tmp_path, "pretrain-a", "pretrain", "a"),
        _fake(tmp_path, "pretrain-b", "pretrain", "b"),
        _fake(tmp_path, "eval-base-a", "eval-base", "a", ["pretrain-a"]),
        _fake(tmp_path, "eval-base-b", "eval-base", "b", ["pretrain-b"]),
        _fake(tmp_path, "extend-a-m", "extend", "a", ["eval-base-a", "not-selected"]),
        _fake(tmp_path, "extend-b-m", "extend", "b", ["eval-base-b"]),
    ]
    log = io.StringIO()
    blocked = study.run_stages(
        stages,
        log,
        jobs=2,
        devices=["0", "1"],
        state_of=lambda s: "new",
        gate=lambda s: "b is below the gate" if s.arch == "b" else None,
        logs=tmp_path / "logs",
    )
    assert blocked == {"b"}
    ran = {s.name: json.loads((tmp_path / f"{s.name}.json").read_text()) for s in stages if s.name != "extend-b-m"}
    assert not (tmp_path / "extend-b-m.json").exists()  # gated
    for s in stages:
        for n in s.needs:
            if n in ran and s.name in ran:
                assert ran[s.name]["t0"] >= ran[n]["t1"], (s.name, n)
    # both pretrain stages ran at once, on different devices; never more than 2 at a time
    a, b = ran["pretrain-a"], ran["pretrain-b"]
    assert a["t0"] < b["t1"] and b["t0"] < a["t1"] and {a["dev"], b["dev"]} == {"0", "1"}
    for t in (r["t0"] + 1e-3 for r in ran.values()):
        assert sum(r["t0"] <= t < r["t1"] for r in ran.values()) <= 2
    rows = [json.loads(x) for x in log.getvalue().splitlines()]
    assert sorted(r["stage"] for r in rows) == sorted(ran) and all(r["rc"] == 0 and "device" in r for r in rows)
    assert "ran eval-base-a" in (tmp_path / "logs" / "eval-base-a.log").read_text()
    assert "study: eval-base-a: finished after" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["eval-base", "gate"])  # the base's RULER decides, or a gate stage of its own
def test_without_the_gate_extensions_do_not_wait_for_the_base_eval(tmp_path, kind):
    import io

    judge = f"{kind}-a"
    stages = [
        _fake(tmp_path, "pretrain-a", "pretrain", "a", sleep=0.1),
        _fake(tmp_path, judge, kind, "a", ["pretrain-a"], sleep=1.5),
        _fake(tmp_path, "extend-a-m", "extend", "a", ["pretrain-a", judge], sleep=0.1),
    ]
    study.run_stages(stages, io.StringIO(), jobs=2, state_of=lambda s: "new", gate=None, logs=tmp_path / "logs")
    ran = {s.name: json.loads((tmp_path / f"{s.name}.json").read_text()) for s in stages}
    assert ran["extend-a-m"]["t0"] >= ran["pretrain-a"]["t1"]
    assert ran["extend-a-m"]["t1"] < ran[judge]["t1"]  # ran while the base was being evaluated
    for f in tmp_path.glob("*.json"):  # with the gate on, a judge that fails it blocks the extension
        f.unlink()
    blocked = study.run_stages(
        stages,
        io.StringIO(),
        jobs=2,
        state_of=lambda s: "new",
        gate=lambda st: "low" if st.kind == kind else None,
        logs=tmp_path / "logs",
    )
    assert blocked == {"a"} and not (tmp_path / "extend-a-m.json").exists()


def test_a_failed_stage_stops_new_ones_and_lets_running_ones_finish(tmp_path):
    import io

    stages = [
        _fake(tmp_path, "pretrain-a", "pretrain", "a", rc=1, sleep=0.1),
        _fake(tmp_path, "pretrain-b", "pretrain", "b", sleep=1.5),
        _fake(tmp_path, "eval-base-a", "eval-base", "a", ["pretrain-a"]),
        _fake(tmp_path, "eval-base-b", "eval-base", "b", ["pretrain-b"]),
    ]
    with pytest.raises(study.StudyError, match="pretrain-a failed"):
        study.run_stages(stages, io.StringIO(), jobs=2, state_of=lambda s: "new", logs=tmp_path / "logs")
    assert (tmp_path / "pretrain-b.json").exists()  # was running: finished
    assert not (tmp_path / "eval-base-a.json").exists() and not (tmp_path / "eval-base-b.json").exists()


def test_jobs_flag_is_checked(tmp_path, capsys):
    assert study_main([str(TINY), "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs 0" in capsys.readouterr().err


def test_an_error_of_the_runner_leaves_no_stage_running(tmp_path):
    import io
    import os
    import time

    pid_file = tmp_path / "pid"
    script = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    long = study.Stage("pretrain-a", "pretrain", [sys.executable, "-c", script], tmp_path / "a", "a")
    # compare has nothing to compare: the runner raises while pretrain-a runs
    compare = study.Stage("compare", "compare", ["true"], tmp_path / "results.md", inputs=[tmp_path / "none.json"])
    real_compare = runner._run_compare

    def late_compare(stage):
        while not pid_file.exists():
            time.sleep(0.05)
        return real_compare(stage)

    runner._run_compare = late_compare
    try:
        with pytest.raises(study.StudyError, match="no results JSON"):
            study.run_stages([long, compare], io.StringIO(), jobs=2, state_of=lambda s: "new", logs=tmp_path / "logs")
    finally:
        runner._run_compare = real_compare
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pid_file.read_text()), 0)


def test_a_study_file_can_vary_another(tmp_path):
    """base: FILE overlays this file on that one: dicts merge, lists and scalars replace, null removes."""
    (tmp_path / "sub").mkdir()
    base = yaml.safe_load(TINY.read_text())
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump(base))
    child = {
        "base": "../parent.yaml",
        "name": "child",
        "models": {"transformer": None},
        "extend": {"methods": ["yarn"], "overrides": {"steps": 3}},
        "gate": None,
    }
    (tmp_path / "sub" / "child.yaml").write_text(yaml.safe_dump(child))
    s = study.load_study(str(tmp_path / "sub" / "child.yaml"))
    assert s["name"] == "child" and list(s["models"]) == ["hybrid"] and "gate" not in s
    assert s["extend"]["methods"] == ["yarn"] and s["extend"]["target"] == base["extend"]["target"]
    assert s["extend"]["overrides"] == {**base["extend"]["overrides"], "steps": 3}  # merged, not replaced
    assert s["pretrain"] == base["pretrain"]
    assert [x.name for x in study.plan(s) if x.kind == "extend"] == ["extend-hybrid-yarn"]

    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(study.StudyError, match="loop"):
        study.load_study(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(study.StudyError, match="nowhere.yaml: no such study file"):
        study.load_study(str(tmp_path / "c.yaml"))


def test_extra_extension_seeds(tmp_path):
    """extend.seeds: the noise cell, the same extension with another --seed, evaluated at its own lengths
    (the same RULER prompts: the eval's sample seed is unchanged) and compared with the rest."""
    s = _tiny(tmp_path)
    s["extend"]["seeds"] = [{"seed": 1, "models": ["hybrid"], "methods": ["yarn"], "lengths": [2048]}]
    stages = {x.name: x for x in study.plan(s)}
    assert [n for n in stages if "seed" in n] == ["extend-hybrid-yarn-seed1", "eval-hybrid-yarn-seed1"]
    ext, ev, main_ev = stages["extend-hybrid-yarn-seed1"], stages["eval-hybrid-yarn-seed1"], stages["eval-hybrid-yarn"]
    assert ext.cmd[ext.cmd.index("--seed") + 1] == "1" and "--seed" not in stages["extend-hybrid-yarn"].cmd
    assert ext.cmd[ext.cmd.index("--config") + 1].endswith("extend-yarn.yaml")
    assert ext.cmd[ext.cmd.index("--out") + 1] == str(tmp_path / "hybrid" / "yarn-seed1")
    assert ev.cmd[ev.cmd.index("--lengths") + 1] == "2048" and ev.needs == ["extend-hybrid-yarn-seed1"]
    assert "--seed" not in ev.cmd and "--seed" not in main_ev.cmd  # same prompts as the seed-0 row
    assert "hybrid yarn (seed 1)" in ev.cmd
    assert str(tmp_path / "hybrid" / "yarn-seed1" / "ruler.json") in stages["compare"].cmd

    path = tmp_path / "study.yaml"
    base = yaml.safe_load(TINY.read_text())
    ok = {**base, "extend": {**base["extend"], "seeds": [{"seed": 0}]}}
    path.write_text(yaml.safe_dump(ok))
    loaded = study.load_study(str(path))["extend"]["seeds"][0]
    assert loaded["models"] == list(base["models"]) and loaded["lengths"] == base["eval"]["lengths"]
    for bad, word in (
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"models": ["hybrid"]}, "seed"),
        ({"seed": 2, "methods": ["alibi"]}, "alibi"),
        ({"seed": 2, "lengths": [0]}, "lengths"),
        ({"seed": 2, "lengths": "32k"}, "lengths"),
    ):
        path.write_text(yaml.safe_dump({**base, "extend": {**base["extend"], "seeds": [bad]}}))
        with pytest.raises(study.StudyError, match=word):
            study.load_study(str(path))
    twice = [{"seed": 3, "methods": ["yarn"]}, {"seed": 3, "models": ["hybrid"], "methods": ["yarn", "pi"]}]
    path.write_text(yaml.safe_dump({**base, "extend": {**base["extend"], "seeds": twice}}))
    with pytest.raises(study.StudyError, match="hybrid/yarn-seed3 twice"):
        study.load_study(str(path))


def test_extra_extension_budgets(tmp_path):
    """extend.budgets: the same extension again with another step count, for the named models and
    methods only, evaluated like the others and compared with them; bad entries fail on load."""
    s = _tiny(tmp_path)
    s["extend"]["budgets"] = [{"steps": 6, "models": ["hybrid"], "methods": ["yarn", "drope"]}]
    stages = {x.name: x for x in study.plan(s)}
    extra = [n for n in stages if "steps" in n]
    assert extra == [
        "extend-hybrid-yarn-6steps",
        "eval-hybrid-yarn-6steps",
        "extend-hybrid-drope-6steps",
        "eval-hybrid-drope-6steps",
    ]
    ext = stages["extend-hybrid-drope-6steps"]
    assert ext.cmd[ext.cmd.index("--steps") + 1] == "6"
    assert ext.cmd[ext.cmd.index("--out") + 1] == str(tmp_path / "hybrid" / "drope-6steps")
    assert ext.cmd[ext.cmd.index("--config") + 1].endswith("extend-drope.yaml")  # the study's own budget otherwise
    assert "--steps" not in stages["extend-hybrid-drope"].cmd
    ev = stages["eval-hybrid-drope-6steps"]
    assert ev.needs == ["extend-hybrid-drope-6steps"] and "hybrid drope (6 steps)" in ev.cmd
    assert str(tmp_path / "hybrid" / "drope-6steps" / "ruler.json") in stages["compare"].cmd
    assert len(stages["compare"].inputs) == 12

    path = tmp_path / "study.yaml"
    base = yaml.safe_load(TINY.read_text())
    for bad, word in (
        ({"steps": 0}, "steps"),
        ({"steps": 4, "models": ["rwkv"]}, "rwkv"),
        ({"steps": 4, "methods": ["alibi"]}, "alibi"),
        ("x", "steps"),
    ):
        path.write_text(yaml.safe_dump({**base, "extend": {**base["extend"], "budgets": [bad]}}))
        with pytest.raises(study.StudyError, match=word):
            study.load_study(str(path))


DROPE_TEMP = {"drope-temp": {"method": "drope", "set": {"extend.rope.temperature": "auto"}}}


def _variant_study(tmp_path) -> Path:
    path = tmp_path / "study.yaml"
    extend = {
        "methods": ["yarn", "drope", "drope-temp"],
        "variants": DROPE_TEMP,
        "budgets": [{"steps": 6, "methods": ["drope-temp"]}],
    }
    path.write_text(yaml.safe_dump({"base": str(TINY), "models": {"transformer": None}, "extend": extend}))
    return path


def test_extension_variants(tmp_path):
    """extend.variants: a method under another name with run-config keys set (dotted, as `--set`), named
    wherever a method is: its own stages, run directories, config file and row label; its config is the
    method's with those keys set."""
    from longctx.config import from_dict, validate

    s = study.load_study(str(_variant_study(tmp_path)))
    out = tmp_path / "out"
    s["out"] = str(out)
    assert study.variant(s, "drope-temp") == ("drope", {"extend.rope.temperature": "auto"})
    assert study.variant(s, "yarn") == ("yarn", {})
    stages = {x.name: x for x in study.plan(s)}
    assert [n for n in stages if n.startswith("extend-")] == [
        "extend-hybrid-yarn",
        "extend-hybrid-drope",
        "extend-hybrid-drope-temp",
        "extend-hybrid-drope-temp-6steps",
    ]
    ext, ev = stages["extend-hybrid-drope-temp"], stages["eval-hybrid-drope-temp"]
    assert ext.cmd[ext.cmd.index("--config") + 1] == str(out / "configs" / "extend-drope-temp.yaml")
    assert ext.out == out / "hybrid" / "drope-temp" and ev.needs == ["extend-hybrid-drope-temp"]
    assert ev.cmd[ev.cmd.index("--label") + 1] == "hybrid drope-temp"
    more = stages["extend-hybrid-drope-temp-6steps"]
    assert more.cmd[more.cmd.index("--config") + 1] == str(out / "configs" / "extend-drope-temp.yaml")
    assert more.cmd[more.cmd.index("--steps") + 1] == "6" and more.out == out / "hybrid" / "drope-temp-6steps"
    assert "hybrid drope-temp (6 steps)" in stages["eval-hybrid-drope-temp-6steps"].cmd
    assert len(stages["compare"].inputs) == 5

    study.write_configs(s, list(stages.values()))
    d = out / "configs"
    assert sorted(p.name for p in d.glob("extend-*")) == [
        "extend-drope-temp.yaml",
        "extend-drope.yaml",
        "extend-yarn.yaml",
    ]
    temp = yaml.safe_load((d / "extend-drope-temp.yaml").read_text())
    plain = yaml.safe_load((d / "extend-drope.yaml").read_text())
    assert temp["extend"]["method"] == "drope" and temp["extend"]["rope"] == {
        **plain["extend"]["rope"],
        "temperature": "auto",
    }
    assert "temperature" not in plain["extend"]["rope"]
    assert {k: v for k, v in temp.items() if k != "extend"} == {k: v for k, v in plain.items() if k != "extend"}
    a, b = from_dict(temp), from_dict(plain)
    validate(a)
    assert a.extend.rope.pop("temperature") == "auto" and a == b  # nothing else differs


def test_variant_dry_run(tmp_path, capsys):
    path = _variant_study(tmp_path)
    out = tmp_path / "out"
    assert study_main([str(path), "--out", str(out), "--dry-run", "--only", "extend-*-drope-temp*"]) == 0
    text = capsys.readouterr().out
    assert "# extend-hybrid-drope-temp: new" in text and "# extend-hybrid-drope-temp-6steps: new" in text
    assert str(out / "configs" / "extend-drope-temp.yaml") in text and "--steps 6" in text
    assert not out.exists()


def test_the_budget_study(tmp_path):
    """study-20m-budget: the hybrid on the layout data, YaRN, DRoPE, DRoPE with the fitted temperature and
    DRoPE with the paper's c = 0.1 fixed, DRoPE with c fitted on retrieval answers and DroPE as published
    (the base length only, c = 0.1 folded in training, evaluated per length), at 60, 180 and 360 extension steps."""
    s = study.load_study(str(REPO / "configs" / "experiments" / "study-20m-budget.yaml"))
    assert list(s["models"]) == ["hybrid"] and s["extend"]["seeds"] == []
    assert s["pretrain"]["data"]["line_layout"] == 0.5 and s["pretrain"]["data"]["short_noise"] == 0.5
    methods = ["yarn", "drope", "drope-temp", "drope-c01", "drope-afit", "drope-recal"]
    assert s["extend"]["methods"] == methods and s["extend"]["overrides"]["steps"] == 60
    assert study.added_temperature(s, "drope-temp") == "auto" and study.added_temperature(s, "drope-c01") == 0.1
    assert study.added_temperature(s, "drope-afit") == "auto"
    assert s["pretrain"]["seeds"] == [0, 1]
    evals = {x.name: x for x in study.plan(s) if x.kind == "eval"}
    tempered = ("drope-temp", "drope-c01", "drope-afit")
    per_length = (*tempered, "drope-recal")
    assert all(("--temperature-per-length" in x.cmd) == any(t in n for t in per_length) for n, x in evals.items())
    recal = study.extend_config(s, "drope-recal")["extend"]
    assert recal["recalibrate_fraction"] == 1.0 and recal["rope"]["temperature"] == 0.1
    # the CE kernel the committed runs were made with, so that they retrain step for step (the default, auto, takes
    # fla's kernels on CUDA: equal to rounding, not bitwise)
    pre = study.pretrain_config(s, "hybrid", 0)
    assert pre["loss_backend"] == "chunked" and study.extend_config(s, "drope-recal")["loss_backend"] == "chunked"
    compare = study.plan(s)[-1]
    assert compare.kind == "compare" and {"--apart", "--budget", "--budget-plot"} <= set(compare.cmd)
    st = [x for x in study.plan(s) if x.kind == "extend"]
    tags = [f"{m}{n}" for n in ("", "-180steps", "-360steps") for m in methods]
    assert [x.name for x in st] == [f"extend-hybrid-s{seed}-{t}" for seed in (0, 1) for t in tags]
    for x in st:
        variant = x.name.split("-", 3)[3]
        added = variant.startswith(tempered)
        drope_run = x.name.replace("-temp", "").replace("-c01", "").replace("-afit", "")
        assert (x.cmd[3] == "temperature") == added and (not added or x.needs[0] == drope_run)
        assert not variant.startswith("drope-c01") or x.cmd[x.cmd.index("--c") + 1] == "0.1"
        assert ("--fit" in x.cmd) == variant.startswith("drope-afit")
        assert not variant.startswith("drope-afit") or x.cmd[x.cmd.index("--fit") + 1 :][:1] == ["answer"]


def test_pretraining_seeds_replicate_every_stage(tmp_path):
    """pretrain.seeds: every model is pretrained, gated, extended (with the same seed) and evaluated once per
    seed, in <out>/<model>-s<seed>/; the labels stay the model's so that compare groups the seeds of a row."""
    s = _tiny(tmp_path)
    s["pretrain"].pop("seed", None)
    s["pretrain"]["seeds"] = [0, 2]
    s["gate"].update(min=80, samples=10)
    st = {x.name: x for x in study.plan(s)}
    assert "pretrain-hybrid" not in st
    for unit, seed in (("hybrid-s0", 0), ("hybrid-s2", 2), ("transformer-s2", 2)):
        pre, ext, ev = st[f"pretrain-{unit}"], st[f"extend-{unit}-yarn"], st[f"eval-{unit}-yarn"]
        assert pre.out == tmp_path / unit / "base" and pre.model == unit.split("-")[0]
        assert ext.cmd[ext.cmd.index("--seed") + 1] == str(seed)
        assert ext.cmd[ext.cmd.index("--model") + 1] == str(tmp_path / unit / "base")
        assert ev.cmd[ev.cmd.index("--label") + 1] == f"{unit.split('-')[0]} yarn" and "--seed" not in ev.cmd
    assert st["gate-hybrid-s2"].needs == ["pretrain-hybrid-s2"] and "gate-transformer-s0" not in st
    assert (
        "gate-hybrid-s2" in st["extend-hybrid-s2-pi"].needs and "gate-hybrid-s0" not in st["extend-hybrid-s2-pi"].needs
    )
    # which orderings hold for every seed
    assert len(st["compare"].inputs) == 20 and {"--apart", "--paired"} <= set(st["compare"].cmd)
    one_seed = {x.name: x for x in study.plan(_tiny(tmp_path))}["compare"].cmd
    assert not {"--apart", "--paired", "--budget"} & set(one_seed)
    study.write_configs(s, list(st.values()))
    for unit, seed in (("hybrid-s0", 0), ("transformer-s2", 2)):
        cfg = yaml.safe_load((tmp_path / "configs" / f"pretrain-{unit}.yaml").read_text())
        assert cfg["seed"] == seed and "seeds" not in cfg
    # the gate decides per seed: one seed's miss blocks only its own extensions
    g0, g2 = st["gate-hybrid-s0"], st["gate-hybrid-s2"]
    g0.out.parent.mkdir(parents=True)
    g2.out.parent.mkdir(parents=True)
    _results(g0.out, 90.0)
    _results(g2.out, 40.0)
    assert study.gate_check(s, g0) is None and "niah_single_1@512=40.0" in study.gate_check(s, g2)
    text = st["compare"].preamble()
    assert "- hybrid, pretraining seed 0: 90: passes (hybrid-s0/base/gate.json)" in text
    assert "- hybrid, pretraining seed 2: 40: **misses** (hybrid-s2/base/gate.json)" in text


def test_pretraining_seeds_with_extra_runs(tmp_path):
    """With several pretraining seeds, budget runs take their unit's seed like its main runs, and an
    extend.seeds run whose seed is the unit's own is left out (it would repeat the main run)."""
    s = _tiny(tmp_path)
    s["pretrain"].pop("seed", None)
    s["pretrain"]["seeds"] = [0, 1]
    s["extend"]["budgets"] = [{"steps": 6, "models": ["hybrid"], "methods": ["yarn"]}]
    s["extend"]["seeds"] = [{"seed": 1, "models": ["hybrid"], "methods": ["yarn"], "lengths": [2048]}]
    st = {x.name: x for x in study.plan(s)}
    for unit, seed in (("hybrid-s0", 0), ("hybrid-s1", 1)):
        ext = st[f"extend-{unit}-yarn-6steps"]
        assert ext.cmd[ext.cmd.index("--seed") + 1] == str(seed) and "--steps" in ext.cmd
    ext = st["extend-hybrid-s0-yarn-seed1"]
    assert ext.cmd[ext.cmd.index("--seed") + 1] == "1"
    assert "extend-hybrid-s1-yarn-seed1" not in st and "eval-hybrid-s1-yarn-seed1" not in st
    assert str(tmp_path / "hybrid-s1" / "yarn-seed1" / "ruler.json") not in st["compare"].cmd


def test_pretraining_seeds_are_checked(tmp_path):
    path = tmp_path / "study.yaml"
    base = yaml.safe_load(TINY.read_text())
    for bad in ([], [0, 0], [-1], "0,1", [True]):
        path.write_text(yaml.safe_dump({**base, "pretrain": {**base["pretrain"], "seeds": bad}}))
        with pytest.raises(study.StudyError, match="pretrain.seeds"):
            study.load_study(str(path))
    one = {k: v for k, v in base["pretrain"].items() if k != "seeds"}
    path.write_text(yaml.safe_dump({**base, "pretrain": {**one, "seed": 3}}))
    s = study.load_study(str(path))
    assert study.units(s) == [("hybrid", "hybrid", 3), ("transformer", "transformer", 3)] and "pretrain-hybrid" in {
        x.name for x in study.plan(s)
    }
    assert study.pretrain_config(s, "hybrid")["seed"] == 3


def _one_line_exit_2(argv, capsys, tmp_path) -> str:
    assert study_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longctx study: error: "), err
    assert not (tmp_path / "out").exists()  # nothing written
    return err[0]


@pytest.mark.parametrize(
    "over, words",
    [
        ({"bogus": 1}, ["unknown key 'bogus'", "valid keys: name, models"]),
        ({"eval": {"samplez": 3}}, ["unknown key 'eval.samplez'", "eval.samples"]),
        ({"gate": {"lenght": 512}}, ["unknown key 'gate.lenght'", "gate.length"]),
        (
            {"models": {"hybrid": {"model": "hybrid-tiny", "overide": {}}}},
            ["models.hybrid.overide", "models.hybrid.override"],
        ),
        ({"extend": {"budgets": [{"steps": 4, "step": 4}]}}, ["extend.budgets[].'step'", "valid keys: steps"]),
        ({"eval": {"samples": "many"}}, ["eval.samples", "'many'"]),
        ({"gate": {"min": "high"}}, ["gate.min", "'high'"]),
        ({"extend": {"target": "long"}}, ["extend.target", "'long'"]),
        ({"eval": {"lengths": []}}, ["eval.lengths", "[]"]),
        ({"gate": {"models": ["rwkv"]}}, ["gate.models", "rwkv"]),
        ({"pretrain": {"batch_size": 0}}, ["pretrain", "batch_size", "0"]),
        ({"extend": {"overrides": {"stepz": 3}}}, ["extend", "stepz"]),
        (
            {"extend": {"methods": ["yarn", "drope-tmp"], "variants": DROPE_TEMP}},
            ["extend.methods", "drope-tmp", "yarn, drope, pi, ntk, none", "drope-temp"],
        ),
        ({"extend": {"variants": {"drope": {"method": "drope"}}}}, ["extend.variants", "'drope'", "method"]),
        ({"extend": {"variants": {"v": {"method": "alibi"}}}}, ["extend.variants.v.method", "alibi"]),
        ({"extend": {"variants": {"v": {"method": "drope", "sett": {}}}}}, ["extend.variants.v.sett", "valid keys"]),
        ({"extend": {"variants": {"v": {"method": "drope", "set": "steps=3"}}}}, ["extend.variants.v.set", "steps=3"]),
        (
            {"extend": {"variants": {"v": {"method": "pi", "set": {"extend.method": "yarn"}}}}},
            ["extend.variants.v.set", "extend.method"],
        ),
        (
            {"extend": {"methods": ["v"], "variants": {"v": {"method": "drope", "set": {"optimizer.lrr": 1}}}}},
            ["v", "optimizer.lrr", "optimizer.lr"],
        ),
        (
            {"extend": {"methods": ["v"], "variants": {"v": {"method": "drope", "set": {"steps": 0}}}}},
            ["v", "steps", "0"],
        ),
        (
            {
                "extend": {
                    "methods": ["v"],
                    "variants": {"v": {"method": "drope", "set": {"extend.rope.temprature": 1}}},
                }
            },
            ["v", "temprature", "accepted: layers, temperature"],
        ),
        (
            {
                "extend": {
                    "methods": ["v"],
                    "variants": {"v": {"method": "drope", "set": {"extend.rope.temperature": "hot"}}},
                }
            },
            ["v", "temperature='hot'"],
        ),
    ],
)
def test_schema_errors_are_one_line_exit_2(tmp_path, capsys, over, words):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"base": str(TINY), **over}))
    line = _one_line_exit_2([str(path), "--out", str(tmp_path / "out")], capsys, tmp_path)
    assert str(path) in line and all(w in line for w in words), line


@pytest.mark.parametrize(
    "flags, word",
    [
        (["--devices", "abc"], "--devices 'abc'"),
        (["--devices", "0,x"], "--devices '0,x'"),
        (["--time-budget", "-5"], "--time-budget -5"),
        (["--time-budget", "soon"], "--time-budget"),
        (["--jobs", "0"], "--jobs 0"),
    ],
)
def test_bad_flags_are_one_line_exit_2(tmp_path, capsys, flags, word):
    line = _one_line_exit_2([str(TINY), "--out", str(tmp_path / "out"), *flags], capsys, tmp_path)
    assert word in line, line


def test_missing_or_malformed_study_file_is_one_line_exit_2(tmp_path, capsys):
    line = _one_line_exit_2([str(tmp_path / "nowhere.yaml")], capsys, tmp_path)
    assert "nowhere.yaml: no such study file" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [study\nmodels: {}\n")
    line = _one_line_exit_2([str(bad)], capsys, tmp_path)
    assert "bad.yaml: not valid YAML" in line and "line" in line
    bad.write_text("- a list\n")
    assert "is a mapping" in _one_line_exit_2([str(bad)], capsys, tmp_path)


def test_shipped_study_paths_resolve_from_any_directory(tmp_path, monkeypatch, capsys):
    """configs/... as the docs spell it, from outside the checkout: the study file, its models and
    its extension configs come from the shipped configs/."""
    monkeypatch.chdir(tmp_path)
    s = study.load_study("configs/experiments/study-20m-gate.yaml")  # with its base: study-20m.yaml
    assert s["pretrain"]["seeds"] == [0, 1, 2] and study.extend_config(s, "yarn")["extend"]["method"] == "yarn"
    assert study_main(["configs/experiments/study-tiny.yaml", "--dry-run", "--only", "pretrain"]) == 0
    assert "# pretrain-hybrid: new" in capsys.readouterr().out and not any(tmp_path.iterdir())


TEMP_ADDED = {
    "drope-temp": {"method": "drope", "temperature": "auto", "per_length": True},
    "drope-c04": {"method": "drope", "temperature": 0.4},
    "drope-ans": {"method": "drope", "temperature": "auto", "fit": "answer"},
}


def test_temperature_variants_add_to_the_drope_runs(tmp_path):
    """extend.variants with `temperature`: no training, `longctx temperature` on the unit's drope run of the same
    budget (and seed), then evaluated like any run; no extension config of their own."""
    path = tmp_path / "study.yaml"
    extend = {
        "methods": ["yarn", "drope", "drope-temp", "drope-c04", "drope-ans"],
        "variants": TEMP_ADDED,
        "budgets": [{"steps": 6, "methods": ["drope", "drope-temp"]}],
    }
    path.write_text(yaml.safe_dump({"base": str(TINY), "models": {"transformer": None}, "extend": extend}))
    s = study.load_study(str(path))
    out = tmp_path / "out"
    s["out"] = str(out)
    st = {x.name: x for x in study.plan(s)}
    for tag, source, c in (
        ("drope-temp", "drope", "auto"),
        ("drope-c04", "drope", "0.4"),
        ("drope-temp-6steps", "drope-6steps", "auto"),
        ("drope-ans", "drope", "auto"),
    ):
        x = st[f"extend-hybrid-{tag}"]
        assert x.kind == "extend" and x.cmd[3] == "temperature" and x.needs == [f"extend-hybrid-{source}"]
        assert x.cmd[x.cmd.index("--model") + 1] == str(out / "hybrid" / source) and x.out == out / "hybrid" / tag
        assert x.cmd[x.cmd.index("--c") + 1] == c and "--config" not in x.cmd
        assert ("--fit" in x.cmd) == (tag == "drope-ans") and x.cmd[-2:] != ["--fit", "nll"]
        if tag == "drope-ans":
            assert x.cmd[x.cmd.index("--fit") + 1] == "answer"
        ev = st[f"eval-hybrid-{tag}"]
        per_length = tag.startswith("drope-temp")
        assert ev.needs == [f"extend-hybrid-{tag}"] and ("--temperature-per-length" in ev.cmd) == per_length
    study.write_configs(s, list(st.values()))
    assert sorted(p.name for p in (out / "configs").glob("extend-*")) == ["extend-drope.yaml", "extend-yarn.yaml"]


@pytest.mark.parametrize(
    "variant, methods, words",
    [
        ({"method": "yarn", "temperature": "auto"}, ["yarn", "v"], "give drope"),
        ({"method": "drope", "temperature": 0}, ["drope", "v"], "auto or a number > 0"),
        ({"method": "drope", "temperature": "hot"}, ["drope", "v"], "auto or a number > 0"),
        ({"method": "drope", "temperature": "auto", "set": {"steps": 3}}, ["drope", "v"], "leave set out"),
        ({"method": "drope", "temperature": "auto"}, ["yarn", "v"], "extend.methods has v without drope"),
        ({"method": "drope", "set": {"steps": 3}, "per_length": True}, ["drope", "v"], "give temperature too"),
        ({"method": "yarn", "per_length": True}, ["yarn", "v"], "or set extend.rope.temperature"),
        ({"method": "drope", "temperature": "auto", "per_length": "maybe"}, ["drope", "v"], "per_length"),
        ({"method": "drope", "temperature": 0.1, "fit": "answer"}, ["drope", "v"], "with temperature: auto"),
        ({"method": "drope", "temperature": "auto", "fit": "ppl"}, ["drope", "v"], "give nll or answer"),
    ],
)
def test_temperature_variants_are_checked(tmp_path, variant, methods, words):
    path = tmp_path / "study.yaml"
    extend = {"methods": methods, "variants": {"v": variant}}
    path.write_text(yaml.safe_dump({"base": str(TINY), "models": {"transformer": None}, "extend": extend}))
    with pytest.raises(study.StudyError, match=re.escape(words)):
        study.load_study(str(path))


def test_a_trained_temperature_variant_is_evaluated_per_length(tmp_path):
    """A variant that trains with a folded temperature (here DroPE as published: the base length only, c fixed)
    is an extension of its own with its config's keys, evaluated with beta set for each length."""
    path = tmp_path / "study.yaml"
    recal = {"method": "drope", "set": {"extend.recalibrate_fraction": 1.0, "extend.rope.temperature": 0.1}}
    extend = {"methods": ["drope", "drope-recal"], "variants": {"drope-recal": {**recal, "per_length": True}}}
    path.write_text(yaml.safe_dump({"base": str(TINY), "models": {"transformer": None}, "extend": extend}))
    s = study.load_study(str(path))
    s["out"] = str(tmp_path / "out")
    st = {x.name: x for x in study.plan(s)}
    x = st["extend-hybrid-drope-recal"]
    assert x.cmd[3] == "extend" and x.needs[0] == "pretrain-hybrid"
    assert "--temperature-per-length" in st["eval-hybrid-drope-recal"].cmd
    assert "--temperature-per-length" not in st["eval-hybrid-drope"].cmd
    study.write_configs(s, list(st.values()))
    cfg = yaml.safe_load((tmp_path / "out" / "configs" / "extend-drope-recal.yaml").read_text())
    assert cfg["extend"]["recalibrate_fraction"] == 1.0 and cfg["extend"]["rope"]["temperature"] == 0.1


def test_temperature_variant_runs(tmp_path):
    """The stage's command runs: pretrain, the drope extension, then the temperature added to it."""
    path = tmp_path / "study.yaml"
    extend = {"methods": ["drope", "drope-c04"], "variants": {"drope-c04": TEMP_ADDED["drope-c04"]}}
    path.write_text(yaml.safe_dump({"base": str(TINY), "models": {"transformer": None}, "extend": extend}))
    out = tmp_path / "out"
    only = "pretrain-hybrid,extend-hybrid-drope,extend-hybrid-drope-c04"
    r = subprocess.run([sys.executable, "-m", "longctx", "study", str(path), "--out", str(out), "--only", only],
                       cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((out / "hybrid" / "drope-c04" / "drope_temperature.json").read_text())
    assert record["c"] == 0.4 and record["added_to"] == str(out / "hybrid" / "drope")
    assert study.train_done(out / "hybrid" / "drope-c04")
