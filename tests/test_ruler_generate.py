"""RULER sample generation: sizing bounds (checked by full tokenization), determinism, caching,
data sources and options. A small byte-level BPE is trained here on the bundled haystack."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from eval_tasks.ruler import TASKS, DataUnavailable, LengthTooShort, generate, max_gen_toks
from eval_tasks.ruler.haystack import BUNDLED
from eval_tasks.ruler.samples import Job, _draft_class, counter_for

SYNTHETIC = [t for t in TASKS if not t.startswith("ruler_qa")]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if not loop.last %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_end|>\n<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(vocab_size=4096, metaspace=False, chat=False):
    """A BPE trained on the bundled text: byte-level (GPT-2/Llama-3 style) or SentencePiece-style
    Metaspace; adds BOS like most causal LM tokenizers."""
    tk = Tokenizer(models.BPE(unk_token=None if not metaspace else "<unk>"))
    if metaspace:
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
        tk.decoder = decoders.Metaspace()
        alphabet = []
        specials = ["<|endoftext|>", "<unk>"]
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        specials = ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    text = BUNDLED.read_text()
    tk.train_from_iterator([text[i : i + 10000] for i in range(0, len(text), 10000)], trainer)
    bos = tk.token_to_id("<|endoftext|>")
    tk.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<unk>" if metaspace else None,
    )
    if chat:
        tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def exact_length(tok, sample, chat=False):
    """Tokens lm-eval's HF model sees (+ generation), computed independently of the generator."""
    if chat:
        text = tok.apply_chat_template(
            [{"role": "user", "content": sample["input"]}, {"role": "assistant", "content": sample["gen_prefix"]}],
            tokenize=False,
            continue_final_message=True,
        )
    else:
        text = sample["input"] + sample["gen_prefix"]  # every RULER answer prefix starts with a space
    ids = tok(text, add_special_tokens=not text.startswith(tok.bos_token)).input_ids
    return len(ids) + sample["max_gen_toks"]


def rebuild(tok, task, length, sample, n, **opts):
    """The sample's draft rebuilt with n haystack units (internal API, to test maximality)."""
    job = Job(task, length, sample["seed"], counter_for(tok, opts.get("chat_template", False)), opts)
    return _draft_class(job.spec["kind"])(job, sample["index"]).build(n)


@pytest.mark.parametrize("length", [1024, 4096, 16384, 65536])
@pytest.mark.parametrize("task", SYNTHETIC)
def test_lengths_fit_and_are_maximal(tok, task, length):
    samples = generate(task, length, 2, tok, cache_dir=False, haystack="bundled")
    assert len(samples) == 2
    for s in samples:
        exact = exact_length(tok, s)
        assert exact == s["length"] <= length
        assert s["max_gen_toks"] == max_gen_toks(task) and s["max_length"] == length
        # one more haystack unit would not fit: the sample is within one unit of the target
        bigger = rebuild(tok, task, length, s, s["units"] + 1, haystack="bundled")
        grown = exact_length(
            tok, {"input": bigger.input, "gen_prefix": bigger.gen_prefix, "max_gen_toks": s["max_gen_toks"]}
        )
        assert grown > length
        assert all(o and o in s["input"] for o in s["outputs"]), "every answer is in the prompt"
        assert s["haystack"] and s["qa_source"] == ""


def test_exact_mode_gives_the_same_samples(tok):
    # piece sums are exact for byte-level BPE: tokenizing every prompt in full changes nothing
    for task in SYNTHETIC:
        auto = generate(task, 3000, 2, tok, cache_dir=False, haystack="bundled")
        full = generate(task, 3000, 2, tok, cache_dir=False, haystack="bundled", exact="full")
        assert auto == full, task


def test_non_additive_tokenizer_falls_back_to_full_tokenization(caplog):
    # SentencePiece-style Metaspace marks every piece's start, so piece sums overcount: the
    # sizer's check must notice and tokenize prompts in full
    sp = make_tokenizer(2048, metaspace=True)
    for task in ("niah_single_1", "niah_single_2", "ruler_cwe"):
        caplog.clear()
        for s in generate(task, 2048, 2, sp, cache_dir=False, haystack="bundled"):
            assert exact_length(sp, s) == s["length"] <= 2048
            bigger = rebuild(sp, task, 2048, s, s["units"] + 1, haystack="bundled", exact="full")
            assert (
                exact_length(
                    sp, {"input": bigger.input, "gen_prefix": bigger.gen_prefix, "max_gen_toks": s["max_gen_toks"]}
                )
                > 2048
            )
        if task == "niah_single_1":  # its lines meet at "\n", where Metaspace merges ".\nThe"
            assert "does not count prompts additively" in caplog.text


def test_chat_template_is_sized_in():
    chat_tok = make_tokenizer(chat=True)
    for task in ("niah_single_2", "ruler_vt", "ruler_fwe"):
        plain = generate(task, 2048, 1, chat_tok, cache_dir=False, haystack="bundled")[0]
        chat = generate(task, 2048, 1, chat_tok, cache_dir=False, haystack="bundled", chat_template=True)[0]
        assert exact_length(chat_tok, chat, chat=True) == chat["length"] <= 2048
        assert chat["units"] < plain["units"]  # the template's tokens came out of the haystack
        bigger = rebuild(chat_tok, task, 2048, chat, chat["units"] + 1, haystack="bundled", chat_template=True)
        grown = {"input": bigger.input, "gen_prefix": bigger.gen_prefix, "max_gen_toks": chat["max_gen_toks"]}
        assert exact_length(chat_tok, grown, chat=True) > 2048


def _digest(samples):
    return hashlib.sha256(json.dumps(samples, sort_keys=True).encode()).hexdigest()


def test_deterministic_and_independent_of_what_ran_before(tok):
    first = generate("niah_multikey_2", 2048, 3, tok, cache_dir=False)
    for task in ("ruler_cwe", "niah_single_2", "ruler_vt"):  # other tasks and lengths in between
        generate(task, 4096, 2, tok, cache_dir=False, haystack="bundled")
    fresh = make_tokenizer()  # a new tokenizer object: no shared count caches
    assert generate("niah_multikey_2", 2048, 3, fresh, cache_dir=False) == first
    assert generate("niah_multikey_2", 2048, 5, tok, cache_dir=False)[:3] == first  # prefix-stable
    assert generate("niah_multikey_2", 2048, 3, tok, seed=7, cache_dir=False) != first
    assert generate("niah_multikey_2", 4096, 3, tok, cache_dir=False)[0]["outputs"] != first[0]["outputs"]


@pytest.mark.parametrize("task", ["niah_multikey_2", "niah_multikey_3"])
def test_needle_haystack_independent_of_the_lengths_before_it(task):
    """The distractor pool of the needle haystack grows with the length asked for; 8k asked alone and 8k asked
    after 2k (the pool grown in two steps, as in a sweep) are the same samples (`lm_eval --tasks ruler` at one
    length and in a sweep, `longctx answers` at one length against an evaluation of several)."""
    alone = generate(task, 8192, 2, make_tokenizer(), cache_dir=False)
    swept = make_tokenizer()
    generate(task, 2048, 1, swept, cache_dir=False)
    assert generate(task, 8192, 2, swept, cache_dir=False) == alone


def test_same_samples_in_a_fresh_process_with_other_hash_seed(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    here = generate("niah_multivalue", 2048, 2, str(tmp_path / "tok"), cache_dir=False, haystack="bundled")
    code = (
        "import json,hashlib,sys;from eval_tasks.ruler import generate;"
        f"s=generate('niah_multivalue',2048,2,{str(tmp_path / 'tok')!r},cache_dir=False,haystack='bundled');"
        "print(hashlib.sha256(json.dumps(s,sort_keys=True).encode()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == _digest(here)


def test_disk_cache_serves_reruns(tok, tmp_path, monkeypatch):
    made = generate("ruler_fwe", 2048, 4, tok, cache_dir=tmp_path)
    assert list((tmp_path / "samples").glob("ruler_fwe-2048-*.jsonl.gz"))
    import eval_tasks.ruler.samples as gen

    monkeypatch.setattr(gen, "fit", lambda *a, **k: pytest.fail("regenerated instead of reading the cache"))
    assert generate("ruler_fwe", 2048, 4, tok, cache_dir=tmp_path) == made
    assert generate("ruler_fwe", 2048, 2, tok, cache_dir=tmp_path) == made[:2]
    with pytest.raises(pytest.fail.Exception):  # a different seed is a different key
        generate("ruler_fwe", 2048, 2, tok, seed=1, cache_dir=tmp_path)


def test_bad_requests_fail_clearly(tok):
    with pytest.raises(ValueError, match="unknown RULER task"):
        generate("niah_single_9", 4096, 1, tok)
    with pytest.raises(TypeError, match="unknown option"):
        generate("niah_single_1", 4096, 1, tok, haystak="bundled")
    with pytest.raises(LengthTooShort):
        generate("niah_single_1", 100, 1, tok, cache_dir=False)
    with pytest.raises(LengthTooShort):
        generate("ruler_cwe", 300, 1, tok, cache_dir=False)
    with pytest.raises(ValueError, match="exact"):
        generate("niah_single_1", 4096, 1, tok, cache_dir=False, exact="sometimes")


def test_qa_unavailable_offline_without_cache(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for task in ("ruler_qa_squad", "ruler_qa_hotpot"):
        with pytest.raises(DataUnavailable, match="not cached"):
            generate(task, 4096, 1, tok, qa_cache_dir=str(tmp_path / "empty"), cache_dir=False)


def test_paul_graham_unavailable_offline(tok, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailable):
        generate("niah_single_2", 2048, 1, tok, haystack="paul_graham", cache_dir=False)
    auto = generate("niah_single_2", 2048, 1, tok, cache_dir=False)  # falls back, and says so
    assert auto[0]["haystack"] == "bundled:botchan"


def test_paul_graham_gives_up_at_once_when_the_hub_is_unreachable(monkeypatch):
    """Not marked offline, no network: one short TCP probe and the bundled fallback, instead of the hub
    client's retries (about 23 s a run); behind a proxy, or with the essays cached, the client decides."""
    import socket
    import types

    from eval_tasks.ruler import haystack

    for k in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HF_ENDPOINT",
    ):
        monkeypatch.delenv(k, raising=False)
    probes, loads = [], []

    def no_network(address, timeout=None):
        probes.append((address, timeout))
        raise OSError("network is unreachable")

    def load_dataset(name, split=None):
        loads.append(name)
        return {"text": ["An essay. " * 200]}

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(haystack, "_hub_cached", lambda name: False)
    with pytest.raises(DataUnavailable, match="unreachable"):
        haystack._paul_graham_text()
    assert probes == [(("huggingface.co", 443), 3.0)] and loads == []
    haystack.load_haystack.cache_clear()
    try:
        assert haystack.load_haystack("auto").source == "bundled:botchan"
        monkeypatch.setenv("HF_ENDPOINT", "http://hub.internal:8080")
        with pytest.raises(DataUnavailable):
            haystack._paul_graham_text()
        assert probes[-1][0] == ("hub.internal", 8080) and loads == []
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # the proxy may reach it: the client decides
        assert haystack._paul_graham_text().startswith("An essay.") and len(loads) == 1
        monkeypatch.delenv("HTTPS_PROXY")
        monkeypatch.setattr(haystack, "_hub_cached", lambda name: True)  # cached: loading may work offline
        assert haystack._paul_graham_text().startswith("An essay.") and len(loads) == 2
    finally:
        haystack.load_haystack.cache_clear()


def test_haystack_dir(tok, tmp_path):
    words = [f"Sentence number {i} talks about marmalade {i % 7}." for i in range(3000)]
    (tmp_path / "b.txt").write_text(" ".join(words[1500:]))
    (tmp_path / "a.txt").write_text(" ".join(words[:1500]) + " ")
    s = generate("niah_single_2", 2048, 1, tok, haystack_dir=str(tmp_path), cache_dir=False)[0]
    assert s["haystack"] == f"dir:{tmp_path.resolve()}"
    assert "Sentence number 0 talks about marmalade 0." in s["input"]
    assert exact_length(tok, s) == s["length"] <= 2048
