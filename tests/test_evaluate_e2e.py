"""`longctx eval` end to end on CPU, offline: a tiny random OlmoHybrid + a locally trained tokenizer,
RULER at 1024 tokens through lm-eval's Python API (hf and longctx backends), resume after a crash,
and the `longctx lm-eval` pass-through."""

import collections
import dataclasses
import gzip
import json
import re
from pathlib import Path

import pytest
import torch

import eval_tasks
from longctx import results as R
from longctx.cli import main
from longctx.evaluate.runner import EvalSpec, evaluate_ruler, fingerprint, journal_path

LENGTH = 1024
TASKS = ["niah_single_1", "ruler_vt", "ruler_qa_squad"]  # qa: data unavailable offline


@pytest.fixture(autouse=True, scope="module")
def _private_sample_cache(tmp_path_factory):
    """Generated RULER samples go to a temporary cache, not the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LONGCTX_RULER_CACHE", str(tmp_path_factory.mktemp("ruler-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, OlmoHybridConfig, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-olmo-hybrid")
    # Byte-level BPE trained on the kinds of text RULER prompts hold (the bundled haystack, the word
    # list, the noise sentences), so that prompts of 1024 tokens have room for their haystacks.
    data = Path(eval_tasks.TASKS_DIR) / "ruler" / "data"
    words = gzip.open(data / "english_words.txt.gz", "rt").read().split()
    text = (data / "botchan.txt").read_text()
    noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    corpus = ([" ".join(words[i:i + 300]) for i in range(0, len(words), 300)]
              + [text[i:i + 2000] for i in range(0, len(text), 2000)] + [noise * 5] * 50)  # fmt: skip
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")  # fmt: skip
    fast.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")  # fmt: skip
    cfg = OlmoHybridConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=2, linear_num_key_heads=2, linear_num_value_heads=2,
        linear_key_head_dim=16, linear_value_head_dim=32, max_position_embeddings=4096,
        layer_types=["linear_attention"] * 3 + ["full_attention"],
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4,
                         "original_max_position_embeddings": 256},
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    fast.save_pretrained(d)
    return d


def _scores(results: dict) -> dict:
    """The scores without each cell's wall time (`seconds`), which differs from run to run."""
    return {t: {n: {k: v for k, v in e.items() if k != "seconds"} for n, e in per.items()}
            for t, per in results["scores"].items()}  # fmt: skip


def _journal_answers(out):
    lines = [json.loads(s) for s in journal_path(out).read_text().splitlines()]
    return {ln["key"]: ln["response"] for ln in lines if ln["kind"] == "response"}


def test_eval_hf_and_longctx_backends(tiny_model, tmp_path, capsys):
    import lm_eval

    outs = {}
    for backend in ("hf", "longctx"):
        out = tmp_path / backend / "ruler.json"
        argv = [
            "eval",
            "--model",
            str(tiny_model),
            "--lengths",
            "1k",
            "--tasks",
            ",".join(TASKS),
            "--samples",
            "1",
            "--backend",
            backend,
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
        assert main(argv) == 0, capsys.readouterr().err
        r = R.load(out)
        assert r["model"] == str(tiny_model) and r["backend"] == backend and r["samples"] == 1
        assert r["rope_parameters"] == json.loads((tiny_model / "config.json").read_text())["rope_parameters"]
        assert r["lm_eval_version"] == lm_eval.__version__ and "(sha256:" in r["haystack"]
        assert r["lengths"] == [LENGTH] and r["tasks"] == TASKS
        for t in TASKS[:2]:
            e = R.cell(r, t, LENGTH)
            assert e["samples"] == 1 and 0 <= e["score"] <= 100
            assert e["haystack"] == "noise"  # RULER's niah_single_1 and vt use the noise haystack
        qa = R.cell(r, "ruler_qa_squad", LENGTH)
        assert qa["score"] is None and "unavailable" in qa  # recorded as unavailable, not 0
        outs[backend] = (r, _journal_answers(out))
        err = capsys.readouterr().err
        assert "niah_single_1 @ 1k" in err and "ruler_vt @ 1k" in err  # progress per task x length
        # from the second cell on, the time left at the first cell's rate
        assert re.search(r"\[2/3\] ruler_vt @ 1k: running \((batches of up to 64; )?about \d+ s left\)", err), err
    # `longctx` runs HybridLM with its cached greedy decoder; `hf` runs transformers' generate:
    # the same greedy answers and scores.
    assert outs["hf"][1] == outs["longctx"][1] and len(outs["hf"][1]) == 2
    assert _scores(outs["hf"][0]) == _scores(outs["longctx"][0])


@pytest.mark.parametrize("longctx_batch", ["3", None])
def test_longctx_backend_batched_prefill_matches_hf(tiny_model, tmp_path, capsys, monkeypatch, longctx_batch):
    """Several prompts prefilled packed in one row answer as transformers does one by one: with --batch-size 3,
    and by default (batches sized from memory per length: all 3 prompts in one call here)."""
    from longctx.evaluate import lm_model

    calls, real = [], lm_model.greedy_generate
    monkeypatch.setattr(
        lm_model, "greedy_generate", lambda m, rows, *a, **k: calls.append(len(rows)) or real(m, rows, *a, **k)
    )
    answers = {}
    for backend, batch in (("hf", "1"), ("longctx", longctx_batch)):
        out = tmp_path / backend / "ruler.json"
        argv = [
            "eval",
            "--model",
            str(tiny_model),
            "--lengths",
            "1k",
            "--tasks",
            "niah_single_1",
            "--samples",
            "3",
            *(["--batch-size", batch] if batch else []),
            "--backend",
            backend,
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
        assert main(argv) == 0, capsys.readouterr().err
        answers[backend] = _journal_answers(out)
        if backend == "longctx" and batch is None:
            assert "(batches of up to 64)" in capsys.readouterr().err  # a tiny model: the limit
    assert len(answers["hf"]) == 3 and answers["hf"] == answers["longctx"]
    assert calls == [3]


def test_longctx_auto_batch_sizes_from_memory_without_trial_forwards(tiny_model, monkeypatch):
    """batch_size=auto: set_generation_capacity sizes the batches (generate.generation_batch_size), and lm-eval's
    own auto path inside generate_until asks the same sizing for max_length instead of running trial forwards;
    a fixed batch_size is kept."""
    from longctx.evaluate import lm_model

    lm = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", batch_size="auto", max_length=LENGTH + 256)
    sizes = []
    monkeypatch.setattr(lm_model, "generation_batch_size", lambda m, cap, limit: sizes.append((cap, limit)) or 5)
    assert lm.set_generation_capacity(1280) == 5 and lm.batch_size == 5 and sizes == [(1280, 64)]
    lm.batch_size_per_gpu = "auto"
    monkeypatch.setattr(lm, "_model_call", lambda *a, **k: pytest.fail("a trial forward ran"))
    lm._generating = True
    assert lm._detect_batch_size() == 5 and sizes[-1] == (LENGTH + 256, 64)
    fixed = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", batch_size=2)
    assert fixed.set_generation_capacity(1280) is None and fixed.batch_size == 2


def test_longctx_batch_out_of_memory_is_split(tiny_model, monkeypatch):
    """A generation batch that runs out of memory is generated in halves, with the answers it would have
    given whole, and later batches are no larger than what fitted."""
    from longctx.evaluate import lm_model

    lm = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", dtype="float32", batch_size=4)
    ctx = torch.tensor([[5, 9, 14, 3, 7, 21, 4, 8], [0, 0, 11, 12, 13, 6, 9, 2], [0, 0, 0, 7, 7, 30, 31, 1]])
    mask = (torch.arange(8) >= torch.tensor([[0], [2], [3]])).long()
    whole = lm._model_generate(ctx, max_length=14, stop=[], attention_mask=mask).tolist()
    real, sizes = lm_model.greedy_generate, []

    def small_memory(model, rows, *a, **k):
        sizes.append(len(rows))
        if len(rows) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, rows, *a, **k)

    monkeypatch.setattr(lm_model, "greedy_generate", small_memory)
    assert lm._model_generate(ctx, max_length=14, stop=[], attention_mask=mask).tolist() == whole
    assert sizes == [3, 1, 2, 1, 1] and lm.batch_size == 1


class _ScriptedLM:
    """Builds lm-eval HF models whose generate() is counted and can be made to fail (a crash mid-run)."""

    @staticmethod
    def make(model_dir, fail_at=None):
        from lm_eval.models.huggingface import HFLM

        class Counting(HFLM):
            calls = 0

            def _model_generate(self, *a, **k):
                type(self).calls += 1
                if fail_at is not None and type(self).calls >= fail_at:
                    raise KeyboardInterrupt
                return super()._model_generate(*a, **k)

        return Counting(pretrained=str(model_dir), device="cpu", batch_size=1, max_length=LENGTH + 256)


def test_resume_after_interruption(tiny_model, tmp_path):
    tasks = ["niah_single_1", "ruler_vt"]

    def spec(out):
        return EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=tasks, samples=2, out=out, backend="hf")

    full = tmp_path / "full.json"
    lm = _ScriptedLM.make(tiny_model)
    ref = evaluate_ruler(spec(full), lm=lm, log=lambda s: None)
    assert type(lm).calls == 4  # 2 tasks x 2 samples

    out = tmp_path / "resumed.json"
    crashing = _ScriptedLM.make(tiny_model, fail_at=4)  # dies on the 2nd sample of the 2nd task
    with pytest.raises(KeyboardInterrupt):
        evaluate_ruler(spec(out), lm=crashing, log=lambda s: None)
    assert not out.exists() and len(_journal_answers(out)) == 3

    again = _ScriptedLM.make(tiny_model)
    resumed = evaluate_ruler(spec(out), lm=again, log=lambda s: None)
    assert type(again).calls == 1  # only the sample in flight is recomputed
    assert _scores(resumed) == _scores(ref)
    assert _journal_answers(out) == _journal_answers(full)
    # a cell's wall time is kept where one run answered it all: not for the cell finished from the journal
    assert all(R.cell(ref, t, LENGTH)["seconds"] > 0 for t in tasks)
    assert R.cell(resumed, "niah_single_1", LENGTH)["seconds"] > 0 and "seconds" not in R.cell(
        resumed, "ruler_vt", LENGTH
    )

    # a finished file reruns from the journal alone, each cell's time with it
    third = _ScriptedLM.make(tiny_model)
    again = evaluate_ruler(spec(out), lm=third, log=lambda s: None)
    assert again["scores"] == resumed["scores"] and type(third).calls == 0


def test_finished_only_scores_the_journal_without_the_model(tiny_model, tmp_path, capsys):
    """An evaluation cut short, its weights gone: --finished-only scores every cell whose answers are all in the
    journal (as lm-eval scores them) and records the rest as not finished, loading no model."""
    import shutil

    tasks = ["niah_single_1", "ruler_vt"]
    ref = evaluate_ruler(EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=tasks, samples=2,
                                  out=tmp_path / "full.json", backend="hf"),
                         lm=_ScriptedLM.make(tiny_model), log=lambda s: None)  # fmt: skip
    out = tmp_path / "cut" / "ruler.json"
    cut = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=tasks, samples=2, out=out, backend="hf")
    with pytest.raises(KeyboardInterrupt):  # dies on the 2nd sample of the 2nd task
        evaluate_ruler(cut, lm=_ScriptedLM.make(tiny_model, fail_at=4), log=lambda s: None)
    journal = journal_path(out)
    # the first cell's score record is lost too: its two answers alone must give lm-eval's score again
    kept = [ln for ln in journal.read_text().splitlines() if json.loads(ln)["kind"] != "cell"]
    journal.write_text("\n".join(kept) + "\n")
    moved = tmp_path / "moved"  # the model elsewhere, without its weights
    shutil.copytree(tiny_model, moved, ignore=shutil.ignore_patterns("*.safetensors"))

    def argv(*extra):
        return ["eval", "--model", str(moved), "--lengths", "1k", "--tasks", "niah_single_1,vt", "--samples", "2",
                "--backend", "hf", "--out", str(out), "--finished-only", *extra]  # fmt: skip

    capsys.readouterr()
    assert main(argv("--seed", "7")) == 2  # not the evaluation's own settings
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed 42 (here 7)" in err[0] and not out.exists()
    before = journal.read_text()
    assert main(argv()) == 0, capsys.readouterr().err
    r = R.load(out)
    # its answers all came from the journal: the score the full run gave, no wall time of this run
    assert R.cell(r, "niah_single_1", LENGTH) == _scores(ref)["niah_single_1"][str(LENGTH)]
    assert R.cell(r, "ruler_vt", LENGTH) == {"score": None, "samples": 0, "unavailable": R.NOT_FINISHED}
    assert r["model"] == str(moved) and "1 not finished" in capsys.readouterr().out
    after = [json.loads(ln) for ln in journal.read_text().splitlines()]
    assert journal.read_text().startswith(before) and [x["kind"] for x in after[len(kept) :]] == ["cell"]

    # a vLLM evaluation's journal is read without vLLM installed (here it is not)
    from longctx.evaluate.resume import Journal

    vout = tmp_path / "vllm" / "ruler.json"
    vspec = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=["niah_single_1"], samples=2, out=vout,
                     backend="vllm")  # fmt: skip
    j = Journal(journal_path(vout), fingerprint(vspec))
    j.add_cell("niah_single_1", LENGTH, 2, {"score": 50.0, "samples": 2, "haystack": "noise"})
    j.close()
    vargv = ["eval", "--model", str(moved), "--lengths", "1k", "--tasks", "niah_single_1", "--samples", "2",
             "--backend", "vllm", "--out", str(vout), "--finished-only"]  # fmt: skip
    assert main(vargv) == 0, capsys.readouterr().err
    assert R.cell(R.load(vout), "niah_single_1", LENGTH)["score"] == 50.0
    capsys.readouterr()

    nothing = tmp_path / "none" / "ruler.json"
    assert main([*argv()[:-2], str(nothing), "--finished-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no answer journal" in err[0] and not nothing.parent.exists()


class _EchoLM:
    """An lm-eval LM whose answer is its prompt: every RULER reference of the synthetic tasks is in
    the prompt, so string_match_all scores 100; an empty answer scores 0."""

    @staticmethod
    def make(echo):
        from lm_eval.api.model import LM

        class Echo(LM):
            def generate_until(self, requests):
                return [r.args[0] if echo else "" for r in requests]

            def loglikelihood(self, requests):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        return Echo()


def test_scores_come_from_lm_eval_metrics(tiny_model, tmp_path):
    tasks = ["niah_single_1", "niah_multikey_1", "ruler_vt", "ruler_fwe"]  # (cwe needs > 1024 tokens)
    for echo, expected in ((True, 100.0), (False, 0.0)):
        s = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=tasks, samples=2,
                     out=tmp_path / f"echo-{echo}.json")  # fmt: skip
        r = evaluate_ruler(s, lm=_EchoLM.make(echo), log=lambda s: None)
        assert {t: R.cell(r, t, LENGTH)["score"] for t in tasks} == dict.fromkeys(tasks, expected)


def test_task_that_cannot_fit_the_length_is_unavailable_not_fatal(tiny_model, tmp_path):
    # CWE's one-shot example alone needs more than 1024 tokens: that cell cannot run, the rest do.
    s = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=["ruler_cwe", "niah_single_1"], samples=1,
                 out=tmp_path / "cwe.json")  # fmt: skip
    r = evaluate_ruler(s, lm=_EchoLM.make(True), log=lambda s: None)
    cwe = R.cell(r, "ruler_cwe", LENGTH)
    assert cwe["score"] is None and "too short" in cwe["unavailable"]
    assert R.cell(r, "niah_single_1", LENGTH)["score"] == 100.0


def test_lm_eval_passthrough_runs_longctx_model(tiny_model, tmp_path, capsys, monkeypatch):
    """`longctx lm-eval --model longctx ... --batch_size auto`: lm-eval's own CLI on our tasks, the generation
    batches sized from memory (both prompts in one call), no trial forwards."""
    from longctx.evaluate import lm_model

    calls, real = [], lm_model.greedy_generate
    monkeypatch.setattr(
        lm_model, "greedy_generate", lambda m, rows, *a, **k: calls.append(len(rows)) or real(m, rows, *a, **k)
    )
    monkeypatch.setattr(lm_model.LongctxLM, "_model_call", lambda *a, **k: pytest.fail("a trial forward ran"))
    argv = ["lm-eval", "--model", "longctx", "--model_args", f"pretrained={tiny_model},max_length={LENGTH + 256}",
            "--tasks", "niah_single_1", "--limit", "2", "--batch_size", "auto", "--device", "cpu",
            "--output_path", str(tmp_path), "--metadata", json.dumps({"max_seq_lengths": [LENGTH]})]  # fmt: skip
    assert main(argv) == 0
    assert "niah_single_1" in capsys.readouterr().out
    assert calls == [2]
    (saved,) = tmp_path.rglob("results_*.json")
    out = json.loads(saved.read_text())
    assert out["config"]["model"] == "longctx"
    assert out["results"]["niah_single_1"]["sample_len"] == 2 and f"{LENGTH},none" in out["results"]["niah_single_1"]
    # our RULER task (from eval_tasks), not lm-eval's built-in one of the same name
    source = out["configs"]["niah_single_1"]["metadata"]["config_source"]
    assert source.startswith(str(Path(eval_tasks.TASKS_DIR))), source


def test_chat_template_wraps_the_prompts(tiny_model, tmp_path):
    from lm_eval.models.huggingface import HFLM

    class Recording(HFLM):
        prompts: list = []

        def generate_until(self, requests, disable_tqdm=False):
            type(self).prompts += [r.args[0] for r in requests]
            return super().generate_until(requests, disable_tqdm)

    lm = Recording(pretrained=str(tiny_model), device="cpu", batch_size=1, max_length=LENGTH + 256)
    s = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=["niah_single_1"], samples=1,
                 out=tmp_path / "chat.json", chat_template=True)  # fmt: skip
    r = evaluate_ruler(s, lm=lm, log=lambda s: None)
    assert r["chat_template"] is True and R.cell(r, "niah_single_1", LENGTH)["samples"] == 1
    (prompt,) = Recording.prompts
    assert prompt.startswith("<|user|>\n") and "\n<|assistant|>\n" in prompt
    tok = lm.tokenizer
    assert len(tok(prompt).input_ids) + 128 <= LENGTH  # sized with the template and the answer budget


def test_longctx_backend_cuda_graphs_model_arg(tiny_model, monkeypatch):
    """`--model_args ...,cuda_graphs=True` reaches greedy_generate (on CPU its fixed-batch path runs
    eagerly and answers as the default path does); without the arg it is on only for a model on a
    GPU (off here, on CPU); a value that is not a boolean is refused."""
    from longctx.evaluate import lm_model

    seen = []
    real = lm_model.greedy_generate

    def spy(*a, **kw):
        seen.append(kw["cuda_graphs"])
        return real(*a, **kw)

    monkeypatch.setattr(lm_model, "greedy_generate", spy)
    ctx = torch.tensor([[5, 9, 14, 3, 7, 21, 4, 8]])
    outs = []
    for flag in ("False", "True", None):
        kw = {} if flag is None else {"cuda_graphs": flag}
        lm = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", dtype="float32", **kw)
        outs.append(lm._model_generate(ctx, max_length=ctx.shape[1] + 6, stop=[]).tolist())
    assert seen == [False, True, False] and outs[0] == outs[1] == outs[2]
    with pytest.raises(ValueError, match="cuda_graphs='yes please'"):
        lm_model.LongctxLM(pretrained=str(tiny_model), cuda_graphs="yes please", device="cpu")


def test_longctx_backend_keeps_the_decode_cache_between_batches(tiny_model):
    """With cuda_graphs, a batch's cache (and on a GPU its decode graph) is kept for the next batch of as many
    prompts (greedy_generate's keep_graph), answering as without; a new generation capacity (the next length)
    and a freed model release it."""
    import gc

    from longctx.evaluate import lm_model
    from longctx.model import generate

    generate.release_kept()
    ctxs = [torch.tensor([[5, 9, 14, 3, 7, 21, 4, 8], [2, 6, 11, 13, 17, 19, 23, 29]]),
            torch.tensor([[7, 1, 8, 2, 8, 1, 8, 2], [3, 1, 4, 1, 5, 9, 2, 6]])]  # fmt: skip
    plain = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", dtype="float32", cuda_graphs=False)
    expected = [plain._model_generate(c, max_length=c.shape[1] + 6, stop=[]).tolist() for c in ctxs]
    assert not generate._KEPT
    lm = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", dtype="float32", cuda_graphs=True,
                            batch_size="auto")  # fmt: skip
    got, kept = [], []
    for c in ctxs:
        got.append(lm._model_generate(c, max_length=c.shape[1] + 6, stop=[]).tolist())
        kept.append(generate._KEPT.get("cache"))
    assert got == expected and kept[0] is not None and kept[1] is kept[0]
    lm.set_generation_capacity(64)
    assert not generate._KEPT
    lm._model_generate(ctxs[0], max_length=14, stop=[])
    assert generate._KEPT
    del lm
    gc.collect()
    assert not generate._KEPT


def test_no_git_chatter_outside_a_git_checkout(tiny_model, tmp_path, monkeypatch, capfd):
    # lm-eval asks `git describe` for its results' git_hash; outside a checkout git complains on stderr
    monkeypatch.chdir(tmp_path)
    s = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=["niah_single_1"], samples=1, out=tmp_path / "g.json")
    evaluate_ruler(s, lm=_EchoLM.make(True), log=lambda s: None)
    assert "not a git repository" not in capfd.readouterr().err


def test_longctx_model_warns_once_when_a_prompt_is_truncated(tiny_model, caplog, request):
    """`--model longctx` with a max_length shorter than a request: one warning with the prompt's tokens,
    the model's max_length and the max_length that would hold it; the prompt is cut as HFLM cuts it."""
    import logging

    from longctx.evaluate import lm_model

    lm_model.log.addHandler(caplog.handler)  # lm-eval's setup_logging may stop propagation to root
    request.addfinalizer(lambda: lm_model.log.removeHandler(caplog.handler))
    lm = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", dtype="float32", max_length=64)
    prompt = "The grass is green. " * 40
    n = len(lm.tok_encode(prompt))
    assert n > 48
    with caplog.at_level(logging.WARNING, logger=lm_model.log.name):
        ids, mask = lm.tok_batch_encode([prompt], left_truncate_len=64 - 16)
        lm.tok_batch_encode([prompt], left_truncate_len=64 - 16)
    assert ids.shape == mask.shape == (1, 48)
    records = list({id(r): r for r in caplog.records}.values())  # caught on our handler and, propagated, on root
    warned = [r.getMessage() for r in records if "does not fit" in r.getMessage()]
    assert warned == [
        f"a prompt of {n} tokens does not fit: max_length 64 leaves 48 for the prompt after 16 to "
        f"generate, so lm-eval cuts its first {n - 48} tokens and still scores the answer; pass "
        f"--model_args ...,max_length={n + 16} or more (warned once per model)"
    ]
    caplog.clear()
    lm.tok_batch_encode(["The grass is green."], left_truncate_len=48)  # fits: nothing to say
    assert not caplog.records


def test_results_record_what_longctx_trained(tiny_model, tmp_path):
    import shutil

    model = tmp_path / "trained"
    shutil.copytree(tiny_model, model)
    meta = {"kind": "extend", "method": "yarn", "steps": 180, "tokens": 11796480, "target": 65536}
    (model / "longctx_train.json").write_text(json.dumps(meta))
    s = EvalSpec(model=str(model), lengths=[LENGTH], tasks=["niah_single_1"], samples=1, out=tmp_path / "r.json")
    r = evaluate_ruler(s, lm=_EchoLM.make(True), log=lambda s: None)
    assert r["train"] == {"kind": "extend", "method": "yarn", "steps": 180, "tokens": 11796480}
    assert R.load(tmp_path / "r.json")["train"] == r["train"]
    plain = evaluate_ruler(EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=["niah_single_1"], samples=1,
                                    out=tmp_path / "p.json"), lm=_EchoLM.make(True), log=lambda s: None)  # fmt: skip
    assert "train" not in plain


def test_temperature_per_length_sets_beta_before_each_length(tiny_model, tmp_path, capsys):
    """--temperature-per-length: before a length's first request the folded beta is replaced by 1 + c ln(L / base)
    (1 up to the base length); the results record each length's beta."""
    import math
    import shutil

    from longctx.model import HybridLM

    model = tmp_path / "drope-temp"
    shutil.copytree(tiny_model, model)
    record = {"c": 0.5, "beta": 1 + 0.5 * math.log(4), "base_len": 512, "target": 2048, "layers": [3]}
    (model / "longctx_train.json").write_text(json.dumps({"kind": "extend", "method": "drope", "temperature": record}))
    hybrid = HybridLM.from_pretrained(model).eval()
    w0 = hybrid.model.layers[3].self_attn.q_norm.weight.detach().clone()
    seen = []
    echo = _EchoLM.make(True)
    echo._model = hybrid
    generate = echo.generate_until

    def spy(requests):
        seen.append(hybrid.model.layers[3].self_attn.q_norm.weight.detach().clone())
        return generate(requests)

    echo.generate_until = spy
    s = EvalSpec(model=str(model), lengths=[512, LENGTH], tasks=["niah_single_1"], samples=1,
                 out=tmp_path / "r.json", temperature_per_length=True)  # fmt: skip
    r = evaluate_ruler(s, lm=echo, log=lambda s: None)
    want = {"512": 1.0, str(LENGTH): 1 + 0.5 * math.log(LENGTH / 512)}
    assert r["temperature"]["per_length"] is True and r["temperature"]["beta"] == pytest.approx(want)
    torch.testing.assert_close(seen[0], w0 / record["beta"])  # at 512: the unfolded weights
    torch.testing.assert_close(seen[-1], w0 / record["beta"] * want[str(LENGTH)])
    assert fingerprint(s)["temperature_per_length"] is True and "temperature_per_length" not in fingerprint(
        EvalSpec(model=str(model), lengths=[512], tasks=["niah_single_1"], samples=1, out=tmp_path / "x.json")
    )

    out = tmp_path / "no.json"
    capsys.readouterr()
    for model_dir, backend, needle in (
        (tiny_model, "hf", "no DRoPE temperature record"),
        (model, "vllm", "use --backend"),
    ):
        argv = ["eval", "--model", str(model_dir), "--lengths", "1k", "--out", str(out), "--backend", backend,
                "--temperature-per-length"]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and not out.exists()


def test_environment_report_collected_once_per_process(tiny_model, tmp_path, monkeypatch):
    """lm-eval adds torch's collect_env report (subprocesses: pip list, nvidia-smi, ...) to every
    simple_evaluate result; evaluate_ruler runs one per cell, so it is collected once and copied after."""
    import importlib.util

    import lm_eval.evaluator
    import torch.utils.collect_env as collect_env
    from lm_eval.loggers import utils

    bench = Path(__file__).resolve().parents[1] / "bench" / "eval_cell_overhead.py"
    found = importlib.util.spec_from_file_location("eval_cell_overhead", bench)
    overhead = importlib.util.module_from_spec(found)
    found.loader.exec_module(overhead)  # its LM answers at once: bench/eval_cell_overhead.py measures with it

    calls, seen = [], []
    monkeypatch.setattr(collect_env, "get_pretty_env_info", lambda: calls.append(1) or "env report")
    monkeypatch.setattr(lm_eval.evaluator, "add_env_info", utils.add_env_info)  # as lm-eval ships it
    real = lm_eval.evaluator.simple_evaluate

    def recording(*a, **k):
        out = real(*a, **k)
        seen.append(out["pretty_env_info"])
        return out

    monkeypatch.setattr(lm_eval, "simple_evaluate", recording)
    for name in ("a", "b"):
        spec = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=["niah_single_1", "ruler_vt"], samples=2,
                        out=tmp_path / name / "ruler.json", backend="hf")  # fmt: skip
        evaluate_ruler(spec, lm=overhead.instant_lm(), log=lambda s: None)
    assert seen == ["env report"] * 4 and len(calls) == 1


def test_vllm_requests_go_in_chunks_sized_per_length(tiny_model, tmp_path, monkeypatch):
    """--backend vllm: requests reach vLLM in chunks of about VLLM_CHUNK_TOKENS tokens (at least VLLM_CHUNK), so
    short prompts fill its batches while an interruption loses one chunk; here with both scaled down."""
    from lm_eval.api.model import LM

    from longctx.evaluate import runner

    calls = []

    class Answering(LM):  # stands in for lm-eval's vllm model
        def generate_until(self, requests, disable_tqdm=False):
            calls.append((self.length, len(requests)))
            return ["x"] * len(requests)

        loglikelihood = loglikelihood_rolling = generate_until

    answering = Answering()
    monkeypatch.setattr(runner, "build_lm", lambda spec: answering)
    monkeypatch.setattr(runner, "VLLM_CHUNK", 1)
    monkeypatch.setattr(runner, "VLLM_CHUNK_TOKENS", 2 * LENGTH)
    assert [runner.vllm_chunk(n) for n in (LENGTH, 2 * LENGTH, 4 * LENGTH)] == [2, 1, 1]
    spec = EvalSpec(model=str(tiny_model), lengths=[LENGTH, 2 * LENGTH], tasks=["niah_single_1"], samples=3,
                    out=tmp_path / "v.json", backend="vllm")  # fmt: skip
    real = runner.vllm_chunk
    monkeypatch.setattr(runner, "vllm_chunk", lambda n: setattr(answering, "length", n) or real(n))
    evaluate_ruler(spec, log=lambda s: None)
    assert calls == [(LENGTH, 2), (LENGTH, 1), (2 * LENGTH, 1), (2 * LENGTH, 1), (2 * LENGTH, 1)]
    monkeypatch.undo()  # the shipped sizes
    assert [runner.vllm_chunk(n) for n in (4096, 16384, 32768, 65536)] == [256, 64, 32, 32]


def test_vllm_engine_is_stopped_when_eval_ends(tiny_model, tmp_path, monkeypatch):
    """--backend vllm: the runner stops the engine process of the model it built (vLLM's engine core is a non-daemon
    process: left running, the interpreter waits on it at exit), after a finished run and after a failed one, and
    leaves alone a model the caller passed in."""
    import types

    from lm_eval.api.model import LM

    from longctx.evaluate import runner

    stopped = []

    class Answering(LM):  # lm-eval's vllm model: its `model` is a vllm.LLM
        def __init__(self, fail=False):
            super().__init__()
            self.fail = fail
            core = types.SimpleNamespace(shutdown=lambda timeout=None: stopped.append(self))
            self.model = types.SimpleNamespace(llm_engine=types.SimpleNamespace(engine_core=core))

        def generate_until(self, requests, disable_tqdm=False):
            if self.fail:
                raise RuntimeError("engine died")
            return ["x"] * len(requests)

        loglikelihood = loglikelihood_rolling = generate_until

    def spec(name):
        return EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=["niah_single_1"], samples=2,
                        out=tmp_path / name / "v.json", backend="vllm")  # fmt: skip

    ok = Answering()
    monkeypatch.setattr(runner, "build_lm", lambda spec: ok)
    evaluate_ruler(spec("ok"), log=lambda s: None)
    assert stopped == [ok]
    failing = Answering(fail=True)
    monkeypatch.setattr(runner, "build_lm", lambda spec: failing)
    with pytest.raises(RuntimeError, match="engine died"):
        evaluate_ruler(spec("failed"), log=lambda s: None)
    assert stopped == [ok, failing]
    evaluate_ruler(spec("given"), lm=Answering(), log=lambda s: None)  # the caller's to stop
    assert stopped == [ok, failing]
    from longctx.evaluate.vllm_engine import stop_vllm_engine

    assert not stop_vllm_engine(types.SimpleNamespace(model=None))  # not a vLLM model: nothing stopped


def test_the_eos_text_is_not_checked_each_step(tiny_model, monkeypatch):
    """lm-eval puts the EOS token's text in every `until`; the EOS id ends a sequence already, so no stop check
    runs for it (a tokenizer decode per sequence and step), while any other stop string is still checked."""
    from longctx.evaluate import lm_model

    checks, real = [], lm_model.greedy_generate

    def spy(model, rows, new, **kw):
        checks.append(kw["stop_sequences"])
        return real(model, rows, new, **kw)

    monkeypatch.setattr(lm_model, "greedy_generate", spy)
    lm = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", dtype="float32")
    eos_text = lm.tok_decode([lm.eot_token_id], skip_special_tokens=False)
    ctx = torch.tensor([[5, 9, 14, 3, 7, 21, 4, 8]])
    with_eos_text = lm._model_generate(ctx, max_length=14, stop=[eos_text]).tolist()
    assert lm._model_generate(ctx, max_length=14, stop=[]).tolist() == with_eos_text
    assert checks == [None, None]
    lm._model_generate(ctx, max_length=14, stop=[eos_text, "\n"])
    assert checks[2] is not None


def test_shared_prefixes_answer_as_transformers(tiny_model, tmp_path, capsys, monkeypatch):
    """`longctx eval --backend longctx --share-prefixes` prefills the prompts' shared haystack once (every shared
    node kept here) and answers as transformers does prompt by prompt; --no-share-prefixes reaches greedy_generate
    too; without either, prefix.DEFAULT_ON decides; `share_prefixes=...` as a model arg must be a boolean."""
    from longctx.evaluate import lm_model
    from longctx.model import generate, prefix

    monkeypatch.setattr(prefix, "MIN_SAVING", 1)
    flags, shares = [], []
    real_gen, real_plan = lm_model.greedy_generate, generate.plan_shared_prefill
    monkeypatch.setattr(
        lm_model, "greedy_generate", lambda *a, **k: flags.append(k["share_prefixes"]) or real_gen(*a, **k)
    )
    monkeypatch.setattr(
        generate, "plan_shared_prefill", lambda ps: (lambda p: shares.append(p.shared) or p)(real_plan(ps))
    )
    steps, real_step = collections.Counter(), generate.decode_step
    monkeypatch.setattr(generate, "decode_step", lambda *a: steps.update([name]) or real_step(*a))
    answers, log = {}, {}
    runs = (("hf", ["--backend", "hf"]), ("shared", ["--share-prefixes"]), ("whole", ["--no-share-prefixes"]))
    for name, extra in runs:
        out = tmp_path / name / "ruler.json"
        argv = ["eval", "--model", str(tiny_model), "--lengths", "1k", "--tasks", "niah_single_1", "--samples", "4",
                "--device", "cpu", "--out", str(out), *extra]  # fmt: skip
        assert main(argv) == 0
        log[name] = capsys.readouterr().err
        answers[name] = _journal_answers(out)
    assert len(answers["hf"]) == 4 and answers["shared"] == answers["hf"] == answers["whole"]
    assert flags == [True, False] and len(shares) == 1 and shares[0] > 0.2, shares
    assert f"prefill {100 * shares[0]:.0f}% shared" in log["shared"] and "shared" not in log["whole"]
    # each cell's line says how long it spent in greedy_generate, over how many batches and decode steps
    for name in ("shared", "whole"):
        pattern = r"4 samples, 0 from journal, ([\d.]+) s \(([\d.]+) s generating: (\d+) batch(?:es)?, (\d+) decode"
        said = re.search(pattern, log[name])
        assert said, log[name]
        assert float(said[2]) <= float(said[1]) + 0.05 and int(said[3]) == 1 and int(said[4]) == steps[name] > 0
    assert "s generating:" not in log["hf"]
    # the results say so, and a journal of answers made one way is not resumed the other way
    results = {name: json.loads((tmp_path / name / "ruler.json").read_text()) for name in ("shared", "whole")}
    assert results["shared"]["share_prefixes"] is True and "share_prefixes" not in results["whole"]
    spec = EvalSpec(model=str(tiny_model), lengths=[1024], tasks=["niah_single_1"], samples=4, out=tmp_path / "x.json")
    assert fingerprint(spec) != fingerprint(dataclasses.replace(spec, share_prefixes=True))
    for default in (True, False):
        monkeypatch.setattr(prefix, "DEFAULT_ON", default)
        assert lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu").share_prefixes is default
    with pytest.raises(ValueError, match="share_prefixes='maybe'"):
        lm_model.LongctxLM(pretrained=str(tiny_model), share_prefixes="maybe", device="cpu")


def test_longctx_encodes_each_prompt_once_and_batches_as_hflm_does(tiny_model, monkeypatch):
    """HFLM's generate_until encodes every prompt to sort the requests, then again for its batch; ours encodes
    them all up front in tokenizer calls of up to 64 (its threads), to what HFLM's tok_encode gives. The batch it builds
    from those equals HFLM's own tok_batch_encode (ids and mask, left or right padded; a prompt starting with the
    BOS text goes HFLM's way), and the answers are the same."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from longctx.evaluate import lm_model

    lm = lm_model.LongctxLM(pretrained=str(tiny_model), device="cpu", dtype="float32", batch_size=3)
    strings = ["The grass is green. " * k + "Answer:" for k in (3, 9, 1, 5)] + ["x"]
    lm._encoded = {}
    for batch in (strings, ["<|endoftext|>The sky is blue."] + strings[:2]):
        for side in ("left", "right"):
            ours, ref = lm.tok_batch_encode(batch, padding_side=side), HFLM.tok_batch_encode(lm, batch, side)
            assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1]), (batch, side)
    lm._encoded = None

    def answers():
        reqs = [Instance("generate_until", {}, (s, {"until": ["\n"], "max_gen_toks": 6}), i)
                for i, s in enumerate(strings)]  # fmt: skip
        return lm.generate_until(reqs, disable_tqdm=True)

    encoded, batched = collections.Counter(), []
    real_encode, real_batch = HFLM.tok_encode, HFLM.tok_batch_encode
    monkeypatch.setattr(
        HFLM, "tok_encode", lambda self, s, *a, **k: encoded.update([s]) or real_encode(self, s, *a, **k)
    )
    monkeypatch.setattr(
        HFLM, "tok_batch_encode", lambda self, b, *a, **k: batched.append(b) or real_batch(self, b, *a, **k)
    )
    memo = {}
    real_until = HFLM.generate_until
    monkeypatch.setattr(
        HFLM, "generate_until", lambda self, *a, **k: memo.update(self._encoded) or real_until(self, *a, **k)
    )
    ours = answers()
    assert not encoded and not batched, (encoded, batched)  # all prompts encoded up front, not through HFLM
    assert {s for s, _ in memo} == set(strings) and all(memo[s, None].tolist() == real_encode(lm, s) for s in strings)
    monkeypatch.setattr(lm_model.LongctxLM, "tok_encode", HFLM.tok_encode)  # HFLM's way: each to sort, then batches
    monkeypatch.setattr(
        lm_model.LongctxLM, "_encode_batch", lambda self, b, side, t: HFLM.tok_batch_encode(self, b, side, None, t)
    )
    assert answers() == ours and sorted(encoded.items()) == sorted((s, 1) for s in strings) and len(batched) == 2
