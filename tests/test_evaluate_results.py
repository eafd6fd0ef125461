"""The results JSON schema: round trip, validation, rope parameters and method names, lengths."""

import copy
import json

import pytest

from longctx import results as R
from longctx.errors import UsageError
from longctx.lengths import format_length, parse_lengths


def _results():
    r = R.new_results(
        model="runs/x",
        rope_parameters={"rope_type": "default", "rope_theta": 5e5},
        tasks=["niah_single_1", "ruler_qa_squad"],
        lengths=[8192, 4096],
        backend="longctx",
        chat_template=False,
        samples=3,
        haystack="essays",
        lm_eval_version="0.4.13",
    )
    R.set_score(r, "niah_single_1", 4096, 66.66666, 3)
    R.set_unavailable(r, "ruler_qa_squad", 4096, "data unavailable: no network")
    return r


def test_round_trip(tmp_path):
    r = _results()
    p = tmp_path / "sub" / "r.json"
    R.save(r, p)
    back = R.load(p)
    assert back == r
    assert back["lengths"] == [4096, 8192] and back["version"] == R.VERSION
    assert R.cell(back, "niah_single_1", 4096) == {"score": 66.66666, "samples": 3}
    assert R.cell(back, "ruler_qa_squad", 4096)["score"] is None
    assert R.cell(back, "niah_single_1", 8192) is None  # missing, not zero
    assert not list(tmp_path.glob("sub/.*tmp"))  # atomic write left no temp file


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.update(format="other"), "'format'"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.pop("rope_parameters"), "rope_parameters"),
    (lambda d: d.pop("lm_eval_version"), "lm_eval_version"),
    (lambda d: d["scores"]["niah_single_1"]["4096"].update(score=101.0), "0..100"),
    (lambda d: d["scores"]["niah_single_1"]["4096"].pop("samples"), "samples"),
    (lambda d: d["scores"].update(bogus_task={}), "bogus_task"),
    (lambda d: d["scores"]["niah_single_1"].update({"4k": {"score": 1.0, "samples": 1}}), "length key"),
    (lambda d: d["scores"]["ruler_qa_squad"]["4096"].update(score=5.0), "unavailable but has a score"),
    (lambda d: d.update(lengths=[0]), "lengths"),
    (lambda d: d["scores"]["niah_single_1"]["4096"].update(seconds=-1.0), "'seconds' -1.0"),
    (lambda d: d["scores"]["niah_single_1"]["4096"].update(seconds="12"), "'seconds' '12'"),
])  # fmt: skip
def test_validation_errors(tmp_path, mutate, words):
    d = copy.deepcopy(_results())
    mutate(d)
    with pytest.raises(R.ResultsError, match=words.replace("(", r"\(")):
        R.validate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(UsageError) as e:
        R.load(p)
    assert "bad.json" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(R.ResultsError):
        R.save(d, tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


def test_rope_parameters_from_transformers_configs(tmp_path):
    from transformers import LlamaConfig, OlmoHybridConfig

    small = dict(hidden_size=64, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=4)
    cases = {
        "yarn": OlmoHybridConfig(rope_parameters={"rope_type": "yarn", "factor": 8.0, "rope_theta": 5e5,
                                                  "original_max_position_embeddings": 8192}, **small),
        "pi": LlamaConfig(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}, **small),
        "ntk": LlamaConfig(rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 1e4}, **small),
        "default": OlmoHybridConfig(**small),
        # transformers builds an Olmo Hybrid without rotary embeddings when rope_theta is null
        "drope": OlmoHybridConfig(rope_parameters={"rope_type": "default", "rope_theta": None}, **small),
    }  # fmt: skip
    for method, cfg in cases.items():
        cfg.save_pretrained(tmp_path / method)
        rp = R.read_rope_parameters(tmp_path / method)
        assert rp == json.loads(json.dumps(cfg.rope_parameters))
        assert R.rope_method(rp) == method
    assert R.rope_method(None) == "drope"
    import rope_methods

    # Olmo 3 after DRoPE: full-attention layers unrotated, sliding layers keep their RoPE
    assert (
        R.rope_method(
            {
                "full_attention": dict(rope_methods.UNROTATED),
                "sliding_attention": {"rope_type": "default", "rope_theta": 5e5},
            }
        )
        == "drope"
    )
    # legacy (transformers 4) spelling
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(
        json.dumps({"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}})
    )
    assert R.read_rope_parameters(tmp_path / "old") == {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}


def test_run_label():
    r = _results()
    assert R.run_label(r) == "x (default)"
    r["label"] = "my run"
    assert R.run_label(r) == "my run"


def test_lengths():
    assert parse_lengths("64k,4k,8K,4096,1m") == [4096, 8192, 65536, 1 << 20]
    assert [format_length(n) for n in (4096, 131072, 1 << 20, 1000)] == ["4k", "128k", "1m", "1000"]
    for bad in ("4q", "0", "-4k", "4.5k", ",", "k"):
        with pytest.raises(UsageError):
            parse_lengths(bad)


def test_task_names_match_eval_tasks():
    import eval_tasks.ruler as ruler

    assert tuple(ruler.TASKS) == R.RULER_TASKS
