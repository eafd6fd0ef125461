"""`longctx extend` and `longctx export` on CPU, and every bad input: exit 2, one line, nothing written."""

import json

import pytest
import torch
from safetensors.torch import load_file

import rope_methods
from longctx.cli import main
from longctx.train.metrics import read_metrics

BASE_LEN, TARGET = 64, 256


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*argv):
    return main([str(a) for a in argv])


def extend(model, out, *extra):
    return cli("extend", "--model", model, "--out", out, "--device", "cpu", "--no-progress", *extra)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "base"
    rc = cli(
        "pretrain",
        "--model",
        "hybrid-tiny",
        "--out",
        out,
        "--device",
        "cpu",
        "--no-progress",
        "--seq-len",
        BASE_LEN,
        "--batch-size",
        2,
        "--steps",
        4,
        "--checkpoint-interval",
        2,
    )
    assert rc == 0
    return out


def _hf_logits(path, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    with torch.no_grad():
        return model, model(ids).logits


def _our_logits(path, ids):
    from longctx.model import HybridLM

    with torch.no_grad():
        return HybridLM.from_pretrained(path)(ids)


def test_yarn_output_loads_in_transformers_with_yarn_rope(base, tmp_path):
    out = tmp_path / "yarn"
    assert extend(base, out, "--method", "yarn", "--target", TARGET, "--steps", 2, "--batch-size", 1) == 0
    base_rope = json.loads((base / "config.json").read_text())["rope_parameters"]
    want = rope_methods.get("yarn").extend(base_rope, base_len=BASE_LEN, target_len=TARGET)
    assert want["rope_type"] == "yarn" and want["factor"] == TARGET / BASE_LEN
    ids = torch.randint(0, 8000, (1, 300), generator=torch.Generator().manual_seed(0))  # past the target
    model, logits = _hf_logits(out, ids)
    got = {k: v for k, v in model.config.rope_parameters.items() if k in want}
    assert got == want and model.config.max_position_embeddings == TARGET
    torch.testing.assert_close(logits, _our_logits(out, ids), rtol=1e-4, atol=1e-4)
    meta = json.loads((out / "longctx_train.json").read_text())
    assert meta["base_len"] == BASE_LEN and meta["seq_len"] == TARGET and meta["method"] == "yarn"
    assert {r["seq_len"] for r in read_metrics(out)} == {TARGET}


def test_drope_recalibrates_at_base_then_trains_at_target(base, tmp_path):
    out = tmp_path / "drope"
    rc = extend(
        base,
        out,
        "--method",
        "drope",
        "--target",
        TARGET,
        "--steps",
        4,
        "--batch-size",
        1,
        "--recalibrate-fraction",
        0.25,
    )
    assert rc == 0
    rows = read_metrics(out)
    assert [(r["stage"], r["seq_len"]) for r in rows] == [("recalibrate", BASE_LEN)] + [("train", TARGET)] * 3
    # same tokens per step in both stages: the base-length stage runs TARGET/BASE_LEN sequences
    assert [r["tokens"] for r in rows] == [TARGET * (i + 1) for i in range(4)]
    ids = torch.randint(0, 8000, (1, 40), generator=torch.Generator().manual_seed(1))
    model, logits = _hf_logits(out, ids)
    assert model.config.rope_parameters.get("rope_theta") is None  # transformers' spelling of no RoPE
    assert model.model.rotary_emb is None
    torch.testing.assert_close(logits, _our_logits(out, ids), rtol=1e-4, atol=1e-4)
    # no RoPE: shifting all positions changes nothing in the attention layers
    from longctx.model import HybridLM

    ours = HybridLM.from_pretrained(out)
    with torch.no_grad():
        a = ours(ids, position_ids=torch.arange(40)[None])
        b = ours(ids, position_ids=torch.arange(40)[None] + 100)
    torch.testing.assert_close(a, b)


def test_extend_resume_continues_in_the_second_stage(base, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = (
        "--method",
        "drope",
        "--target",
        128,
        "--batch-size",
        1,
        "--schedule",
        "constant",
        "--checkpoint-interval",
        1,
    )
    assert extend(base, a, *args, "--steps", 4) == 0
    assert extend(base, b, *args, "--steps", 2) == 0
    assert extend(base, b, *args, "--steps", 4, "--resume") == 0
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dry_run_prints_the_plan_and_writes_nothing(base, tmp_path, capsys):
    out = tmp_path / "dry"
    assert extend(base, out, "--method", "drope", "--target", "1k", "--steps", 10, "--dry-run") == 0
    text = capsys.readouterr().out
    assert "recalibrate" in text and "base_len: 64" in text and "target: 1024" in text
    assert not out.exists()


def test_export_a_checkpoint(base, tmp_path):
    out = tmp_path / "exported"
    assert cli("export", "--checkpoint", base / "checkpoints" / "step_4", "--out", out) == 0
    final, exported = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert final.keys() == exported.keys() and all(torch.equal(final[k], exported[k]) for k in final)
    assert (out / "tokenizer.json").is_file()
    assert json.loads((out / "longctx_train.json").read_text())["seq_len"] == BASE_LEN
    assert cli("export", "--checkpoint", base / "checkpoints" / "step_2", "--out", tmp_path / "e2") == 0
    assert not torch.equal(load_file(tmp_path / "e2" / "model.safetensors")["lm_head.weight"], final["lm_head.weight"])


def test_force_restarts_a_run(base, tmp_path):
    out = tmp_path / "f"
    args = ("--method", "yarn", "--target", 128, "--steps", 1, "--batch-size", 1)
    assert extend(base, out, *args) == 0
    (out / "metrics.jsonl").write_text("")
    assert extend(base, out, *args, "--force") == 0
    assert len(read_metrics(out)) == 1


# ---------------------------------------------------------------- bad input


def _bad(capsys, argv, out):
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    try:
        rc = cli(*argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1, err
    after = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert after == before  # nothing created or changed
    return err[0]


def test_bad_extend_inputs(base, tmp_path, capsys):
    out = tmp_path / "o"
    ok = ["extend", "--model", base, "--out", out, "--device", "cpu", "--steps", 2]
    assert "nope" in _bad(capsys, [*ok, "--method", "nope", "--target", 256], out)
    assert "64" in _bad(capsys, [*ok, "--method", "yarn", "--target", 64], out)  # target <= base
    assert "32" in _bad(capsys, [*ok, "--method", "yarn", "--target", 32], out)
    assert "-3" in _bad(capsys, [*ok[:-1], "-3", "--method", "yarn", "--target", 256], out)
    assert "lr" in _bad(capsys, [*ok, "--method", "yarn", "--target", 256, "--lr=-1e-3"], out)
    missing = tmp_path / "no-such-model"
    assert str(missing) in _bad(
        capsys, ["extend", "--model", missing, "--out", out, "--method", "yarn", "--target", 256, "--steps", 2], out
    )
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    assert "corrupt" in _bad(
        capsys, ["extend", "--model", corrupt, "--out", out, "--method", "yarn", "--target", 256, "--steps", 2], out
    )
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    (noweights / "config.json").write_text((base / "config.json").read_text())
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (noweights / f).write_text((base / f).read_text())
    assert "noweights" in _bad(
        capsys, ["extend", "--model", noweights, "--out", out, "--method", "yarn", "--target", 256, "--steps", 2], out
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "empty" in _bad(capsys, [*ok, "--method", "yarn", "--target", 256, "--data", empty], out)
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert "--resume" in _bad(capsys, [*ok, "--method", "yarn", "--target", 256], out)


def test_bad_pretrain_inputs(tmp_path, capsys):
    out = tmp_path / "p"
    ok = ["pretrain", "--model", "hybrid-tiny", "--out", out, "--device", "cpu", "--steps", 2, "--seq-len", 32]
    assert "seq_len" in _bad(capsys, [*ok, "--seq-len", 0], out)
    assert "steps" in _bad(capsys, [*ok[:-4], "--steps", -1], out)
    assert "lr" in _bad(capsys, [*ok, "--lr", "-1"], out)
    assert "batch_size" in _bad(capsys, [*ok, "--batch-size", 0], out)
    assert "no-such-model" in _bad(capsys, [*ok[:2], "no-such-model", *ok[3:]], out)
    empty_dir = tmp_path / "nodocs"
    empty_dir.mkdir()
    (empty_dir / "a.txt").write_text("")
    assert "nodocs" in _bad(capsys, [*ok, "--data", empty_dir], out)
    out.mkdir()
    (out / "x").write_text("")
    assert "not empty" in _bad(capsys, ok, out)
    assert "no longctx run" in _bad(capsys, [*ok, "--force"], out)


def test_bad_export_inputs(base, tmp_path, capsys):
    out = tmp_path / "e"
    assert "step_99" in _bad(capsys, ["export", "--checkpoint", base / "checkpoints" / "step_99", "--out", out], out)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text("{}")
    assert "broken" in _bad(capsys, ["export", "--checkpoint", broken, "--out", out], out)


def test_eval_lengths_and_eval_hook(base, tmp_path, monkeypatch):
    from longctx.evaluate import eval_cmd
    from longctx.train.extend_cmd import eval_lengths

    assert eval_lengths(65536) == [4096, 8192, 16384, 32768, 65536]
    assert eval_lengths(12000) == [4096, 8192, 12000]
    assert eval_lengths(256) == [256]
    seen = {}
    monkeypatch.setattr(eval_cmd, "run", lambda args: seen.update(vars(args)) or 0)
    out = tmp_path / "ev"
    assert extend(base, out, "--method", "pi", "--target", 128, "--steps", 1, "--batch-size", 1, "--eval") == 0
    assert seen["model"] == str(out) and seen["lengths"] == "128" and seen["out"] == str(out / "ruler.json")
