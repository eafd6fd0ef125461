"""`longctx extend --method drope` as published, on CPU: the temperature (fixed c or fitted), the
recalibration share (0: Olmo Hybrid's variant; 1: the paper's own recipe, the base length only), Olmo 3's
sliding layers, and bad values."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from longctx.cli import main
from longctx.train.metrics import read_metrics

BASE_LEN, TARGET = 64, 256
FULL = "model.layers.3.self_attn.q_norm.weight"  # the full-attention layer of both tiny models


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*argv):
    return main([str(a) for a in argv])


def extend(model, out, *extra):
    return cli(
        "extend",
        "--model",
        model,
        "--out",
        out,
        "--device",
        "cpu",
        "--no-progress",
        "--method",
        "drope",
        "--target",
        TARGET,
        "--batch-size",
        1,
        *extra,
    )


def _pretrain(tmp_path_factory, name):
    out = tmp_path_factory.mktemp("drope") / name
    rc = cli(
        "pretrain",
        "--model",
        name,
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
        2,
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    return _pretrain(tmp_path_factory, "hybrid-tiny")


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    return _pretrain(tmp_path_factory, "transformer-tiny")


def _same_logits(out, length=300):
    """transformers' AutoModelForCausalLM and HybridLM on the exported run: equal logits (fp32)."""
    from transformers import AutoModelForCausalLM

    from longctx.model import HybridLM

    ids = torch.randint(0, 4000, (1, length), generator=torch.Generator().manual_seed(0))
    theirs = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        a, b = theirs(ids).logits, HybridLM.from_pretrained(out)(ids)
    assert (a - b).abs().max().item() <= 1e-4
    return theirs


def _saved(out):
    """The exported weights under our parameter names (the export writes transformers' GDN norm names)."""
    from longctx.model.hf import read_config, to_internal

    return to_internal(load_file(out / "model.safetensors"), read_config(out))


def _unfolded(out, step):
    from longctx.train.export_cmd import load_from_checkpoint

    return load_from_checkpoint(out / "checkpoints" / f"step_{step}").state_dict()


def test_auto_fits_c_and_folds_beta_into_the_export(hybrid, tmp_path, capsys):
    out = tmp_path / "auto"
    assert extend(hybrid, out, "--steps", 2, "--set", "extend.rope.temperature=auto") == 0
    record = json.loads((out / "drope_temperature.json").read_text())
    assert record == json.loads((out / "longctx_train.json").read_text())["temperature"]
    assert record["setting"] == "auto" and record["layers"] == [3] and record["s"] == TARGET / BASE_LEN
    tried = record["fit"]["tried"]
    assert len(tried) == 15 and record["fit"]["seq_len"] == TARGET and record["fit"]["sequences"] >= 4
    assert record["c"] == min(tried, key=lambda r: r["nll"])["c"] >= 0
    assert record["beta"] == pytest.approx(1 + record["c"] * math.log(TARGET / BASE_LEN))
    assert "DRoPE temperature c = " in capsys.readouterr().err
    exported, trained = _saved(out), _unfolded(out, 2)
    torch.testing.assert_close(exported[FULL], trained[FULL] * record["beta"])
    assert all(torch.equal(exported[k], trained[k]) for k in exported if k != FULL)
    _same_logits(out)


def test_fixed_c_without_recalibration_and_export_of_a_checkpoint(hybrid, tmp_path):
    out = tmp_path / "fixed"
    assert (
        extend(
            hybrid,
            out,
            "--steps",
            2,
            "--recalibrate-fraction",
            0,
            "--checkpoint-interval",
            1,
            "--set",
            "extend.rope.temperature=0.4",
        )
        == 0
    )
    assert [(r["stage"], r["seq_len"]) for r in read_metrics(out)] == [("train", TARGET)] * 2  # no base-length stage
    record = json.loads((out / "drope_temperature.json").read_text())
    beta = 1 + 0.4 * math.log(4)
    assert record["c"] == 0.4 and record["beta"] == pytest.approx(beta) and "fit" not in record
    exported = load_file(out / "model.safetensors")
    torch.testing.assert_close(exported[FULL], _unfolded(out, 2)[FULL] * beta)
    theirs = _same_logits(out)
    assert theirs.model.rotary_emb is None  # Olmo Hybrid: no RoPE, spelled rope_theta null
    # `longctx export` folds the same temperature into an earlier checkpoint
    assert cli("export", "--checkpoint", out / "checkpoints" / "step_1", "--out", tmp_path / "e1") == 0
    torch.testing.assert_close(load_file(tmp_path / "e1" / "model.safetensors")[FULL], _unfolded(out, 1)[FULL] * beta)
    assert json.loads((tmp_path / "e1" / "longctx_train.json").read_text())["temperature"]["beta"] == pytest.approx(
        beta
    )


def test_recalibration_only_is_the_papers_recipe(hybrid, tmp_path):
    """--recalibrate-fraction 1: every step at the base length without RoPE (the published DroPE: recalibrate
    at the original context, extend zero-shot with the temperature); the export still serves the target:
    its length, no RoPE, beta for the target folded in, transformers' logits equal past the base length."""
    out = tmp_path / "recal"
    args = ("--steps", 3, "--recalibrate-fraction", 1, "--set", "extend.rope.temperature=0.1")
    assert extend(hybrid, out, *args) == 0
    rows = read_metrics(out)
    assert [(r["stage"], r["seq_len"]) for r in rows] == [("recalibrate", BASE_LEN)] * 3
    assert rows[0]["tokens"] * 3 == rows[-1]["tokens"] == 3 * TARGET  # the budget's tokens per step, at 64 a row
    config = json.loads((out / "config.json").read_text())
    assert config["max_position_embeddings"] == TARGET and config["rope_parameters"]["rope_theta"] is None
    record = json.loads((out / "drope_temperature.json").read_text())
    assert record["beta"] == pytest.approx(1 + 0.1 * math.log(TARGET / BASE_LEN))
    torch.testing.assert_close(load_file(out / "model.safetensors")[FULL], _unfolded(out, 3)[FULL] * record["beta"])
    _same_logits(out, length=TARGET)


def test_olmo3_keeps_sliding_rope_by_default_all_on_request(transformer, tmp_path):
    import rope_methods

    base_rope = json.loads((transformer / "config.json").read_text())["rope_parameters"]["sliding_attention"]
    out = tmp_path / "full"
    assert extend(transformer, out, "--steps", 2, "--set", "extend.rope.temperature=0.2") == 0
    theirs = _same_logits(out)
    rp = theirs.config.rope_parameters
    assert rope_methods.is_unrotated(rp["full_attention"])
    assert {k: rp["sliding_attention"][k] for k in base_rope} == base_rope
    assert json.loads((out / "drope_temperature.json").read_text())["layers"] == [3]
    out = tmp_path / "all"
    assert extend(transformer, out, "--steps", 1, "--recalibrate-fraction", 0, "--set", "extend.rope.layers=all") == 0
    rp = _same_logits(out).config.rope_parameters
    assert rope_methods.is_unrotated(rp["full_attention"]) and rope_methods.is_unrotated(rp["sliding_attention"])
    assert not (out / "drope_temperature.json").exists()  # no temperature asked


def test_dry_run_shows_the_temperature(hybrid, tmp_path, capsys):
    out = tmp_path / "dry"
    assert extend(hybrid, out, "--steps", 10, "--dry-run", "--set", "extend.rope.temperature=0.5") == 0
    text = capsys.readouterr().out
    assert "temperature:" in text and "beta: 1.69" in text and not out.exists()
    sets = ("--set", "extend.rope.temperature=auto", "--set", "extend.rope.temperature_fit=answer")
    assert extend(hybrid, out, "--steps", 10, "--dry-run", *sets) == 0
    text = capsys.readouterr().out
    assert "auto (fitted after training: mean NLL of the answer tokens" in text and not out.exists()


@pytest.mark.parametrize(
    "flag,value,needle",
    [
        ("--set", "extend.rope.temperature=0", "temperature=0"),
        ("--set", "extend.rope.temperature=-0.5", "temperature=-0.5"),
        ("--set", "extend.rope.temperature=hot", "'hot'"),
        ("--set", "extend.rope.layers=some", "'some'"),
        ("--set", "extend.rope.betafast=3", "'betafast'"),
        ("--recalibrate-fraction", "-0.1", "-0.1"),
        ("--recalibrate-fraction", "1.5", "recalibrate_fraction"),
    ],
)
def test_bad_drope_values(hybrid, tmp_path, capsys, flag, value, needle):
    out = tmp_path / "bad"
    rc = extend(hybrid, out, "--steps", 2, flag, value)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    if "temperature" in needle or "'hot'" in needle:
        assert "auto" in err[0] and "c > 0" in err[0]  # the accepted values
    if "'some'" in needle:
        assert "full, all" in err[0]
    assert not out.exists()
