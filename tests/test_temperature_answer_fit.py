"""DRoPE's temperature fitted on retrieval answers (`temperature_fit: answer`, `longctx temperature --fit answer`).

References: the held-out documents are the probe's own-wording key-value samples (longctx.train.probe.own_kv_samples)
and their objective is the probe's teacher-forced answer NLL (probe._answer_nll: cross-entropy of the answer
span's logits, no padding, no loss function of the trainer); `longctx extend` fitting it itself on the same run
must try the same values of c with the same objective values as `longctx temperature --fit answer`
(test_train_temperature_cmd's test_auto_equals_extend_fitting_it_itself, for both fits)."""

import json

import pytest
import torch
from test_train_extend_drope import TARGET, cli, extend
from test_train_temperature_cmd import drope, hybrid, temperature  # noqa: F401 (fixtures)

from longctx.data import load_tokenizer
from longctx.data.packing import IGNORE_INDEX
from longctx.train.loss import heldout_ce, make_loss_fn
from longctx.train.probe import _answer_nll, encode, own_kv_samples
from longctx.train.temperature import FIT_ANSWERS, HELDOUT_SEED, answer_batches

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("embedded")


def test_answer_batches_label_the_answers_only(tok):
    batches = answer_batches(tok, 1024, 4, seed=7)
    assert len(batches) == FIT_ANSWERS // 4
    samples = own_kv_samples(tok, 1024 - 256, FIT_ANSWERS, 7)
    rows = [(b, i) for b in batches for i in range(4)]
    for (b, i), (prompt, answer, _) in zip(rows, samples, strict=True):
        ids, labels = b["input_ids"][i], b["labels"][i]
        assert ids.shape == labels.shape == (1024,) and b["position_ids"][i].tolist() == list(range(1024))
        p = encode(tok, prompt)
        want = tok.encode(" " + answer, add_special_tokens=False)
        span = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
        assert span == list(range(len(p) - 1, len(p) - 1 + len(want)))  # the positions that predict the answer
        assert labels[span].tolist() == want and tok.decode(labels[span].tolist()) == " " + answer
        assert ids[: len(p)].tolist() == p and ids[1 : len(p) + len(want)].tolist() == p[1:] + want
    assert all(b["cu_seqlens"].tolist() == [0, 1024, 2048, 3072, 4096] for b in batches)
    assert sum(b["num_tokens"] for b in batches) == sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)


def test_short_targets_skip_documents_that_do_not_fit(tok):
    """At 256 tokens some generated documents come out longer than asked: those are skipped, every row fits."""
    batches = answer_batches(tok, TARGET, 1, seed=3)
    assert len(batches) == FIT_ANSWERS
    for b in batches:
        labelled = (b["labels"][0] != IGNORE_INDEX).nonzero().flatten()
        assert len(labelled) > 0 and int(labelled[-1]) < TARGET - 1


def test_objective_is_the_probes_answer_nll(drope):  # noqa: F811
    """Per document, the trainer's held-out CE over the labelled tokens (padded row, chunked loss) equals the
    probe's answer NLL computed on the unpadded prompt + answer."""
    from longctx.model import HybridLM

    model = HybridLM.from_pretrained(drope, dtype=torch.float32).eval()
    tok = load_tokenizer(str(drope))
    batches = answer_batches(tok, 512, 1, seed=11)[:3]
    samples = own_kv_samples(tok, 512 - 128, 3, 11)
    loss_fn = make_loss_fn("chunked", chunk=64)
    with torch.no_grad():
        for b, (prompt, answer, _) in zip(batches, samples, strict=True):
            ce, count = heldout_ce(model, [b], loss_fn, torch.device("cpu"))
            ref = _answer_nll(model, encode(tok, prompt), tok.encode(" " + answer, add_special_tokens=False), "cpu")
            assert float(ce) / count == pytest.approx(ref, rel=1e-5)


def test_the_answer_fit_measures_another_objective_than_the_nll_fit(drope, tmp_path):  # noqa: F811
    """On the same run, the answer fit's objective at c = 0 is not the whole sequences' NLL (extend and
    `longctx temperature` agreeing on each: test_train_temperature_cmd)."""
    values = {}
    for fit in ("nll", "answer"):
        out = tmp_path / fit
        assert temperature("--model", drope, "--out", out, "--fit", fit) == 0
        record = json.loads((out / "drope_temperature.json").read_text())["fit"]
        assert record["by"] == fit and (("answer tokens" in record["objective"]) == (fit == "answer"))
        values[fit] = {r["c"]: r["nll"] for r in record["tried"]}[0.0]
    assert values["answer"] != pytest.approx(values["nll"], rel=1e-3)


def test_answer_fit_seeds_follow_the_run(tok):
    """extend and `longctx temperature` draw the documents with the run's seed + HELDOUT_SEED."""
    a = answer_batches(tok, TARGET, 1, seed=5 + HELDOUT_SEED)
    b = answer_batches(tok, TARGET, 1, seed=6 + HELDOUT_SEED)
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "argv, needle",
    [
        (("--fit", "answer", "--c", "0.2"), "--fit answer: applies to --c auto, not to a fixed c (0.2)"),
    ],
)
def test_fit_refused_with_a_fixed_c(drope, tmp_path, capsys, argv, needle):  # noqa: F811
    out = tmp_path / "out"
    assert temperature("--model", drope, "--out", out, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and not out.exists()


@pytest.mark.parametrize(
    "sets, needle",
    [
        (
            ("extend.rope.temperature=auto", "extend.rope.temperature_fit=ppl"),
            "temperature_fit='ppl'; accepted: nll, answer",
        ),
        (("extend.rope.temperature=0.1", "extend.rope.temperature_fit=answer"), "a fit applies to temperature=auto"),
    ],
)
def test_extend_refuses_bad_fits(hybrid, tmp_path, capsys, sets, needle):  # noqa: F811
    out = tmp_path / "out"
    argv = [a for s in sets for a in ("--set", s)]
    assert extend(hybrid, out, "--steps", 1, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and not out.exists()


def test_a_target_too_short_for_the_documents_fails_before_training(hybrid, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    sets = ("--set", "extend.rope.temperature=auto", "--set", "extend.rope.temperature_fit=answer")
    assert cli("extend", "--model", hybrid, "--out", out, "--device", "cpu", "--no-progress", "--method", "drope",
               "--target", 80, "--batch-size", 1, "--steps", 2, *sets) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--target 80: too short for the answer fit" in err[0] and not out.exists()
