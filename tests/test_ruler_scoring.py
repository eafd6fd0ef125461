"""RULER scoring against NVIDIA's formulas, written here as NVIDIA/RULER writes them
(scripts/eval/synthetic/constants.py and scripts/eval/evaluate.py postprocess_pred)."""

import re

import pytest

from eval_tasks.ruler import TASKS, postprocess, sample_score, score


# --- NVIDIA/RULER scripts/eval/synthetic/constants.py, verbatim (strict=False: their plain zip's behaviour)
def string_match_part(preds, refs):
    score = (
        sum(
            [
                max([1.0 if r.lower() in pred.lower() else 0.0 for r in ref])
                for pred, ref in zip(preds, refs, strict=False)
            ]
        )
        / len(preds)
        * 100
    )
    return round(score, 2)


def string_match_all(preds, refs):
    score = (
        sum(
            [
                sum([1.0 if r.lower() in pred.lower() else 0.0 for r in ref]) / len(ref)
                for pred, ref in zip(preds, refs, strict=False)
            ]
        )
        / len(preds)
        * 100
    )
    return round(score, 2)


# --- NVIDIA/RULER scripts/eval/evaluate.py, verbatim
def postprocess_pred(predict_str: str, task_config: dict):
    predict_str = predict_str.strip()
    np_pattern = re.compile(r"[\x00-\x1f]")
    predict_str = np_pattern.sub("\n", predict_str).strip()
    return predict_str


NVIDIA_METRIC = {t: (string_match_part if t.startswith("ruler_qa") else string_match_all) for t in TASKS}

CASES = [
    # (predictions, references)
    (["  The numbers are 1234567 and 7654321.\n"], [["1234567", "7654321"]]),
    (["1234567 only"], [["1234567", "7654321", "1111111", "2222222"]]),
    (["FOO bar", "nothing"], [["foo"], ["bar"]]),
    (["\x00 paris \x1f london \t"], [["Paris", "LONDON"]]),
    (["VAR ABCDE VAR FGHIJ"], [["ABCDE", "FGHIJ", "KLMNO", "PQRST", "UVWXY"]]),
    (["no"], [["yes"]]),
    (["a b c", "x y z", "abc"], [["a", "b", "q"], ["z"], ["ab", "c", "d"]]),
]

QA_CASES = [
    # several references: any one contained scores 1 (lm-eval's built-in gives the fraction instead)
    (["Denver Broncos"], [["Denver Broncos", "The Denver Broncos", "Broncos"]]),
    (["Carolina"], [["Carolina Panthers", "the Panthers", "Carolina"]]),
    (["It was in 1066."], [["1066", "in 1066", "October 1066"]]),
    (["unknown", "Norman"], [["Normandy"], ["Normans", "Norman"]]),
    (["THE SOVIET UNION\x07"], [["the Soviet Union", "USSR"]]),
]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("preds,refs", CASES + QA_CASES)
def test_score_equals_nvidia(task, preds, refs):
    nvidia = NVIDIA_METRIC[task]([postprocess_pred(p, {}) for p in preds], refs)
    assert score(task, preds, refs) == nvidia


def test_qa_scores_any_reference_not_fraction():
    preds, refs = ["Carolina"], [["Carolina Panthers", "the Panthers", "Carolina"]]
    assert score("ruler_qa_squad", preds, refs) == 100.0
    assert score("niah_single_1", preds, refs) == round(100 / 3, 2)  # string_match_all on the same


@pytest.mark.parametrize("pred", ["  x\x01y\n", "\t\tabc\x1f", "plain", "\x00\x00", "a\x7fb"])
def test_postprocess_equals_nvidia(pred):
    assert postprocess(pred) == postprocess_pred(pred, {})


def test_sample_score_matches_task_score():
    for task in TASKS:
        for preds, refs in CASES + QA_CASES:
            per = [sample_score(task, p, r) for p, r in zip(preds, refs, strict=True)]
            assert round(sum(per) / len(per), 2) == score(task, preds, refs)
            assert all(0.0 <= x <= 100.0 for x in per)


def test_score_rejects_bad_input():
    with pytest.raises(ValueError):
        score("nope", ["a"], [["a"]])
    with pytest.raises(ValueError):
        score("niah_single_1", ["a", "b"], [["a"]])
