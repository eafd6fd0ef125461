"""`longctx temperature`: DRoPE's temperature added to a finished DRoPE run. Checked against `longctx extend`
fitting it itself on the same run (same seed, same data): the same values of c tried, the same held-out NLLs,
the same exported weights; a fixed c scales the q_norm weights of the layers without RoPE by the paper's
beta = 1 + c ln(s), and transformers' logits equal HybridLM's on the result."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from test_train_extend_drope import BASE_LEN, FULL, TARGET, _pretrain, _same_logits, cli, extend

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    return _pretrain(tmp_path_factory, "hybrid-tiny")


@pytest.fixture(scope="module")
def drope(hybrid, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "drope"
    assert extend(hybrid, out, "--steps", 2) == 0
    return out


def temperature(*argv):
    return cli("temperature", "--device", "cpu", *argv)


@pytest.mark.parametrize("fit", ["nll", "answer"])
def test_auto_equals_extend_fitting_it_itself(hybrid, drope, tmp_path, fit):
    """Both objectives: the whole held-out sequences' NLL (the paper's) and the retrieval answers' NLL."""
    from longctx.train.temperature import FIT_ANSWERS, FIT_SEQUENCES

    fitted = tmp_path / "fitted-by-extend"
    sets = ("--set", "extend.rope.temperature=auto", "--set", f"extend.rope.temperature_fit={fit}")
    assert extend(hybrid, fitted, "--steps", 2, *sets) == 0
    out = tmp_path / "added"
    assert temperature("--model", drope, "--out", out, *(("--fit", fit) if fit != "nll" else ())) == 0
    ours, theirs = (json.loads((d / "drope_temperature.json").read_text()) for d in (out, fitted))
    assert ours["fit"]["by"] == theirs["fit"]["by"] == fit
    assert ours["fit"]["sequences"] == (FIT_ANSWERS if fit == "answer" else FIT_SEQUENCES)
    tried = {r["c"]: r["nll"] for r in ours["fit"]["tried"]}
    assert tried.keys() == {r["c"] for r in theirs["fit"]["tried"]} and len(tried) == 15
    for r in theirs["fit"]["tried"]:
        assert tried[r["c"]] == pytest.approx(r["nll"], rel=1e-5, abs=1e-5)
    assert ours["c"] == theirs["c"] and ours["beta"] == pytest.approx(theirs["beta"])
    assert ours["added_to"] == str(drope) and ours["layers"] == theirs["layers"] == [3]
    a, b = load_file(out / "model.safetensors"), load_file(fitted / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    meta = json.loads((out / "longctx_train.json").read_text())
    assert meta["temperature"] == ours and meta["rope_options"]["temperature"] == "auto"
    assert ours["c"] == min(tried, key=tried.get)
    assert meta["method"] == "drope" and meta["target"] == TARGET
    assert not (drope / "drope_temperature.json").exists()  # the run itself is untouched


def test_fixed_c_at_another_target(drope, tmp_path, capsys):
    out = tmp_path / "c04-1k"
    assert temperature("--model", drope, "--out", out, "--c", "0.4", "--target", "1k") == 0
    beta = 1 + 0.4 * math.log(1024 / BASE_LEN)
    record = json.loads((out / "drope_temperature.json").read_text())
    assert record["c"] == 0.4 and record["beta"] == pytest.approx(beta) and record["target"] == 1024
    assert "fit" not in record and "c ln(1024/64) = 2.109" in capsys.readouterr().err
    new, old = load_file(out / "model.safetensors"), load_file(drope / "model.safetensors")
    torch.testing.assert_close(new[FULL], old[FULL] * beta)
    assert all(torch.equal(new[k], old[k]) for k in new if k != FULL)
    _same_logits(out)
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 1024  # the run's: 256


@pytest.mark.parametrize(
    "extra, needle",
    [
        (("--c", "0"), "--c '0': give auto or a number > 0"),
        (("--c", "hot"), "--c 'hot'"),
        (("--target", str(BASE_LEN)), f"--target {BASE_LEN}: must exceed the run's base length {BASE_LEN}"),
        (("--target", "lots"), "--target"),
    ],
)
def test_bad_values(drope, tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    assert temperature("--model", drope, "--out", out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and not out.exists()


def test_refuses_runs_that_are_not_plain_drope(hybrid, drope, tmp_path, capsys):
    yarn = tmp_path / "yarn"
    assert cli("extend", "--model", hybrid, "--out", yarn, "--device", "cpu", "--no-progress", "--method", "yarn",
               "--target", TARGET, "--batch-size", 1, "--steps", 1) == 0  # fmt: skip
    once = tmp_path / "once"
    assert temperature("--model", drope, "--out", once, "--c", "0.2") == 0
    capsys.readouterr()
    for model, needle in (
        (yarn, "a yarn run"),
        (once, "has a temperature already (c = 0.2)"),
        (hybrid, "not a `longctx extend` run"),
    ):
        out = tmp_path / "out"
        assert temperature("--model", model, "--out", out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and not out.exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert temperature("--model", drope, "--out", tmp_path / "full", "--c", "0.2") == 2
    assert "is not empty" in capsys.readouterr().err and (tmp_path / "full" / "notes.txt").read_text() == "mine"
