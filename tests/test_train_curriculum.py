"""Pretraining curriculum and corpus mix: shorter stages first at equal tokens per step, the
embedded corpus shaped by data.mix / data.doc_tokens, exact resume across a stage boundary,
and one-line errors for bad values."""

import re

import pytest
import torch
from test_train_loop import _same_run, during_step, interrupt, pretrain

from longctx.config import RunConfig, apply_overrides, from_dict, parse_set, validate
from longctx.data import default_tokenizer, synthetic
from longctx.errors import UsageError
from longctx.train.data import loader_factory
from longctx.train.loop import Stage
from longctx.train.metrics import read_metrics
from longctx.train.pretrain_cmd import pretrain_stages

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stages_split_the_steps_and_keep_tokens_per_step():
    cfg = from_dict(
        {
            "seq_len": 1024,
            "batch_size": 4,
            "curriculum": [{"seq_len": 256, "fraction": 0.25}, {"seq_len": 512, "fraction": 0.25}],
        }
    )
    validate(cfg)
    assert pretrain_stages(cfg, 100) == [
        Stage("pretrain@256", 256, 16, 25),
        Stage("pretrain@512", 512, 8, 25),
        Stage("pretrain", 1024, 4, 50),
    ]
    assert pretrain_stages(RunConfig(seq_len=64, batch_size=2), 7) == [Stage("pretrain", 64, 2, 7)]
    with pytest.raises(UsageError, match="nothing for the main stage"):
        pretrain_stages(from_dict({"seq_len": 64, "curriculum": [{"seq_len": 32, "fraction": 0.9}]}), 1)


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["curriculum=[{seq_len: 4096, fraction: 0.5}]"], "curriculum[0].seq_len"),
        (["curriculum=[{seq_len: 128, fraction: 0}]"], "curriculum[0].fraction"),
        (["curriculum=[{seq_len: 128, fraction: 0.6}, {seq_len: 256, fraction: 0.5}]"], "curriculum fractions"),
        (["curriculum=[{seq_len: 128}]"], "fraction"),
        (["data.mix={poetry: 1}"], "data.mix"),
        (["data.mix={kv: -1}"], "data.mix"),
        (["data.mix={kv: 0}"], "data.mix"),
        (["data.doc_tokens=[64, 8]"], "data.doc_tokens"),
        (["data.doc_tokens=[64]"], "data.doc_tokens"),
    ],
)
def test_bad_values_name_the_key(sets, needle):
    with pytest.raises((UsageError, TypeError)) as e:
        validate(apply_overrides(RunConfig(seq_len=1024), parse_set(sets)))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_rejects_a_bad_curriculum_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain(out, "--seq-len", 64, "--steps", 2, "--set", "curriculum=[{seq_len: 64, fraction: 0.5}]") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "curriculum[0].seq_len" in err[0] and not out.exists()
    assert pretrain(out, "--steps", 2, "--data", str(tmp_path), "--set", "data.mix={kv: 1}") == 2
    assert "embedded corpus" in capsys.readouterr().err and not out.exists()


def test_mix_and_doc_tokens_shape_the_embedded_stream():
    tok = default_tokenizer()
    cfg = apply_overrides(
        RunConfig(seq_len=512, batch_size=2), parse_set(["data.mix={drill: 1}", "data.doc_tokens=[100, 120]"])
    )
    validate(cfg)
    batch = next(iter(loader_factory(cfg, tok)(Stage("pretrain", 512, 2, 1))))
    cu = batch["cu_seqlens"].tolist()
    lengths = [b - a for a, b in zip(cu[:-1], cu[1:], strict=True)]
    assert all(n <= 512 for n in lengths) and sorted(lengths)[len(lengths) // 2] < 200  # ~100-120 token documents
    text = tok.decode(batch["input_ids"].flatten().tolist())
    asked = [
        re.compile(re.escape(q).replace(r"\{thing\}", r"[a-z ]+?").replace(r"\{key\}", r"[\w-]+"))
        for q, _ in synthetic.ASK_ONE
    ]
    n_questions = sum(any(r.fullmatch(line.removeprefix("Question: ")) for r in asked) for line in text.splitlines())
    assert n_questions >= 2 * (len(lengths) - 2)  # every whole drill document asks two or more questions


CURRICULUM = (
    "--seq-len",
    64,
    "--batch-size",
    2,
    "--lr",
    "2e-3",
    "--warmup-steps",
    1,
    "--checkpoint-interval",
    2,
    "--set",
    "curriculum=[{seq_len: 16, fraction: 0.5}]",
    "--set",
    "data.mix={drill: 1, book: 1}",
)


def test_curriculum_runs_short_first_and_resumes_bitwise_across_the_boundary(tmp_path, monkeypatch):
    assert pretrain(tmp_path / "a", "--steps", 6, *CURRICULUM) == 0
    rows = read_metrics(tmp_path / "a")
    assert [(r["stage"], r["seq_len"]) for r in rows] == [("pretrain@16", 16)] * 3 + [("pretrain", 64)] * 3
    # each row paired with the one before it (a zero row first; the longer list's last row is unused)
    per_step = [r["tokens"] - p["tokens"] for p, r in zip([{"tokens": 0}] + rows, rows, strict=False)]
    assert per_step == [128] * 6  # 8 x 16 in the short stage, 2 x 64 after
    # killed during step 3 (the last short step; the step-2 checkpoint is the newest), then resumed
    undo = during_step(monkeypatch, 3, interrupt)
    assert pretrain(tmp_path / "b", "--steps", 6, *CURRICULUM) == 130
    undo()
    assert pretrain(tmp_path / "b", "--steps", 6, "--resume", *CURRICULUM) == 0
    _same_run(tmp_path / "a", tmp_path / "b")


def test_summary_per_stage_of_a_curriculum_run(tmp_path):
    import statistics
    import subprocess
    import sys

    from longctx.train.metrics import summarize

    assert (
        pretrain(
            tmp_path / "a",
            "--steps",
            6,
            *CURRICULUM,
            "--probe-interval",
            3,
            "--set",
            "probe.lengths=[512]",
            "--set",
            "probe.tasks=[niah_single_1]",
            "--set",
            "probe.samples=1",
        )
        == 0
    )
    rows = read_metrics(tmp_path / "a")
    short, main_ = summarize(rows, skip=1)
    assert (short["stage"], short["steps"], short["seq_len"], short["tokens_per_step"]) == ("pretrain@16", 3, 16, 128)
    assert (main_["stage"], main_["steps"], main_["seq_len"], main_["tokens_per_step"]) == ("pretrain", 3, 64, 128)
    assert short["tokens_per_s"] == statistics.median(r["tokens_per_s"] for r in rows[1:3])
    assert main_["loss_first"] == rows[3]["loss"] and main_["loss_last"] == rows[5]["loss"]
    assert main_["probe_mean"] == rows[5]["probe/mean"] and main_["mfu"] is None and main_["peak_mem_gb"] is None
    out = subprocess.run(
        [sys.executable, "-m", "longctx", "summary", str(tmp_path / "a")], capture_output=True, text=True, check=True
    )
    assert "| a | pretrain@16 | 3 | 16 | 128 |" in out.stdout and "| a | pretrain | 3 | 64 | 128 |" in out.stdout


def test_data_fillers_reach_the_embedded_source():
    tok = default_tokenizer()
    cfg = apply_overrides(RunConfig(seq_len=256, batch_size=1), parse_set(["data.fillers=[noise]"]))
    validate(cfg)
    assert loader_factory(cfg, tok)(Stage("pretrain", 256, 1, 1)).source.fillers == ("noise",)
    assert (
        loader_factory(RunConfig(seq_len=256), tok)(Stage("pretrain", 256, 1, 1)).source.fillers == synthetic.HAYSTACKS
    )


def test_data_layout_reaches_the_embedded_source():
    tok = default_tokenizer()
    cfg = apply_overrides(RunConfig(seq_len=256), parse_set(["data.line_layout=0.5", "data.short_noise=0.25"]))
    validate(cfg)
    assert loader_factory(cfg, tok)(Stage("pretrain", 256, 1, 1)).source.layout == synthetic.Layout(0.5, 0.25)
    assert loader_factory(RunConfig(seq_len=256), tok)(Stage("pretrain", 256, 1, 1)).source.layout == synthetic.PROSE


def test_the_data_check_takes_its_batch_inline_and_training_gets_the_prefetch(monkeypatch):
    """check_data takes one batch to fail early on a bad source; with the GPU prefetch (a forked worker)
    it must not start and stop a worker for that one batch. The loaders training builds do prefetch."""
    from longctx.data import prefetch
    from longctx.train.data import DATA_PREFETCH, check_data

    def no_worker(gen, depth):
        raise AssertionError("the check started a prefetch worker")

    monkeypatch.setattr(prefetch, "in_process", no_worker)
    make = loader_factory(RunConfig(seq_len=128, batch_size=1), default_tokenizer(), **DATA_PREFETCH)
    stage = Stage("pretrain", 128, 1, 1)
    check_data(make, stage)
    trained = make(stage)
    assert (trained.prefetch, trained.prefetch_in) == (2, "process")
    with pytest.raises(AssertionError, match="started a prefetch worker"):
        next(iter(trained))


@pytest.mark.parametrize(
    "env, want", [(None, (2, "process")), ("thread", (2, "thread")), (" Process ", (2, "process")), ("off", None)]
)
def test_gpu_training_prefetch_follows_the_environment(monkeypatch, env, want):
    from longctx.train.data import PREFETCH_ENV, data_prefetch

    if env is None:
        monkeypatch.delenv(PREFETCH_ENV, raising=False)
    else:
        monkeypatch.setenv(PREFETCH_ENV, env)
    assert data_prefetch(torch.device("cpu")) == {}  # CPU training never prefetches
    got = data_prefetch(torch.device("cuda"))
    assert (None if not got else (got["prefetch"], got["prefetch_in"])) == want


def test_a_bad_prefetch_setting_names_the_value(monkeypatch):
    from longctx.train.data import PREFETCH_ENV, data_prefetch

    monkeypatch.setenv(PREFETCH_ENV, "gpu")
    with pytest.raises(UsageError, match="LONGCTX_DATA_PREFETCH='gpu'"):
        data_prefetch(torch.device("cuda"))
