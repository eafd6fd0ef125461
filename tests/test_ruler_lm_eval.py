"""Our RULER tasks inside lm-eval: they replace the built-in ones, run end to end through the
`lm_eval` CLI on a tiny random Olmo Hybrid (offline), report every requested length for each
task and for the `ruler` group, and skip the QA tasks when their data cannot be had."""

import glob
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_ruler_generate import make_tokenizer

import eval_tasks
from eval_tasks.ruler import TASKS

QA = {"ruler_qa_squad", "ruler_qa_hotpot"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import transformers
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("tiny-olmo-hybrid")
    tok = make_tokenizer(chat=True)
    cfg = transformers.OlmoHybridConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
        layer_types=["linear_attention", "full_attention"], pad_token_id=0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _chat(tok, doc):
    return tok.apply_chat_template(
        [{"role": "user", "content": doc["input"]}, {"role": "assistant", "content": doc["gen_prefix"]}],
        tokenize=False,
        continue_final_message=True,
    )


def _check_logged(out_dir, model_dir, per_length, lengths, chat):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    files = glob.glob(str(out_dir / "**" / "samples_*.jsonl"), recursive=True)
    seen = {}
    for f in files:
        for line in open(f):
            row = json.loads(line)
            doc, ctx = row["doc"], row["arguments"]["gen_args_0"]["arg_0"]
            if doc["task"] in QA:
                continue
            assert ctx == (_chat(tok, doc) if chat else doc["input"] + doc["gen_prefix"])
            n = len(tok(ctx, add_special_tokens=not ctx.startswith(tok.bos_token)).input_ids)
            assert n + doc["max_gen_toks"] == doc["length"] <= doc["max_length"]
            seen[(doc["task"], doc["max_length"])] = seen.get((doc["task"], doc["max_length"]), 0) + 1
    return seen


def test_our_tasks_override_the_builtin_ones():
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=eval_tasks.TASKS_DIR)
    ours = Path(eval_tasks.TASKS_DIR).resolve()
    for name in (*TASKS, "ruler"):
        assert ours in Path(tm.task_index[name].yaml_path).resolve().parents, name


def test_lm_eval_cli_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "out"
    meta = {"max_seq_lengths": [1024, 2048], "qa_cache_dir": str(tmp_path / "no-qa"), "num_samples": 5}
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "hf",
        "--model_args", f"pretrained={tiny_model},dtype=float32", "--device", "cpu", "--batch_size", "1",
        "--include_path", eval_tasks.TASKS_DIR, "--tasks", "ruler", "--metadata", json.dumps(meta),
        "--limit", "2", "--apply_chat_template", "--seed", "1", "--log_samples", "--output_path", str(out),
        "--gen_kwargs", "max_gen_toks=8",  # a random model's answers: keep the CPU run short
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               LONGCTX_RULER_CACHE=str(tmp_path / "cache"))  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for qa in QA:
        assert f"{qa} unavailable, skipped" in log
    results = json.load(open(glob.glob(str(out / "**" / "results_*.json"), recursive=True)[0]))["results"]
    assert set(results) == {*TASKS, "ruler"}
    for length in ("1024", "2048"):
        assert isinstance(results["ruler"][f"{length},none"], float)  # the group score per length
        for task in TASKS:
            assert (f"{length},none" in results[task]) == (task not in QA)
    assert "|ruler" in proc.stdout and "2048" in proc.stdout
    seen = _check_logged(out, tiny_model, 2, [1024, 2048], chat=True)
    assert seen == {(t, n): 2 for t in TASKS if t not in QA for n in (1024, 2048)}  # --limit is per length


def test_python_api_regenerates_for_the_chat_template(tiny_model, tmp_path, monkeypatch, caplog, request):
    # No --apply_chat_template on this command line and none in the metadata: the samples are
    # first sized without the template, then regenerated when lm-eval asks for it.
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("LONGCTX_RULER_CACHE", str(tmp_path / "cache"))
    # lm-eval's setup_logging (run in-process by earlier tests) may stop "lm_eval" propagating to
    # the root logger where caplog listens: listen on our task logger itself.
    task_log = logging.getLogger("lm_eval.longctx_ruler")
    task_log.addHandler(caplog.handler)
    monkeypatch.setattr(task_log, "level", logging.INFO)
    request.addfinalizer(lambda: task_log.removeHandler(caplog.handler))
    meta = {"max_seq_lengths": [1024], "num_samples": 3, "pretrained": str(tiny_model)}
    tm = TaskManager(include_path=eval_tasks.TASKS_DIR, include_defaults=False, metadata=meta)
    res = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tiny_model},dtype=float32", device="cpu",
        tasks=["niah_single_1", "ruler_fwe"],
        task_manager=tm, limit=2, apply_chat_template=True, log_samples=True, bootstrap_iters=0,
    )  # fmt: skip
    assert "regenerating samples" in caplog.text
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    for task in ("niah_single_1", "ruler_fwe"):
        rows = res["samples"][task]
        assert len(rows) == 2 and "1024,none" in res["results"][task]
        for row in rows:
            doc, ctx = row["doc"], row["arguments"][0][0]
            assert ctx == _chat(tok, doc) and doc["chat_template"]
            n = len(tok(ctx, add_special_tokens=not ctx.startswith(tok.bos_token)).input_ids)  # as HFLM encodes
            assert n + doc["max_gen_toks"] == doc["length"] <= 1024


def test_prompts_longer_than_the_model_are_refused(tiny_model, tmp_path, monkeypatch):
    """lm-eval left-truncates a prompt longer than the model's max_length and still scores it: our
    tasks refuse such a run, with the numbers, whether max_length comes from --model_args or (not
    given) from the model's config.json as lm-eval's HF model reads it."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from eval_tasks.ruler.lm_task import check_fits, model_max_length

    monkeypatch.setenv("LONGCTX_RULER_CACHE", str(tmp_path / "cache"))
    # the metadata as lm_eval's CLI makes it: --model_args merged into --metadata
    meta = {"max_seq_lengths": [1024], "num_samples": 1, "pretrained": str(tiny_model), "max_length": 512}
    tm = TaskManager(include_path=eval_tasks.TASKS_DIR, include_defaults=False, metadata=meta)
    with pytest.raises(
        ValueError,
        match=r"niah_single_1: a prompt of \d+ tokens \+ 128 to generate \(RULER length "
        r"1024\) does not fit the model's max length 512 \(max_length=512\).*max_length=1280",
    ):
        lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={tiny_model},dtype=float32,max_length=512", device="cpu",
            tasks=["niah_single_1"], task_manager=tm, limit=1, bootstrap_iters=0,
        )  # fmt: skip

    assert model_max_length({"pretrained": str(tiny_model)})[0] == 4096  # max_position_embeddings
    assert model_max_length({"pretrained": str(tiny_model), "max_length": "8448"}) == (8448, "max_length=8448")
    docs = [
        {"length": 8000, "max_gen_toks": 128, "max_length": 8192},
        {"length": 4000, "max_gen_toks": 128, "max_length": 4096},
    ]
    with pytest.raises(
        ValueError, match=r"a prompt of 7872 tokens \+ 128 .* max length 4096 \(max_position_embeddings=4096 in"
    ):
        check_fits("niah_single_1", docs, {"pretrained": str(tiny_model)})
    check_fits("niah_single_1", docs, {"pretrained": str(tiny_model), "max_length": 8448})  # fits
    check_fits("niah_single_1", docs, {"pretrained": "owner/hub-id"})  # unknown length: lm-eval's own warning
