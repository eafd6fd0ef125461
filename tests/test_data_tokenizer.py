"""The shipped default tokenizer: HF round trip, single-digit numbers, cheap facts, chat template."""

import json
import random

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from longctx.data import CHAT_TEMPLATE, default_tokenizer, load_tokenizer, render_chat, synthetic
from longctx.data.tokenizer import SPECIAL_TOKENS, tokenizer_file
from longctx.errors import UsageError

SAMPLES = [
    "The access code for quizzical-lantern is 7306419.",
    "  Leading spaces, tabs\tand\nnew lines; unicode: caf\u00e9 \u2014 \u4e2d\u6587 \U0001f600",
    "<|user|>\nhello<|end|>\n<|assistant|>\nhi<|end|>\n",
    "uuid 8d3c1f9e-4b2a-4c6d-9e8f-0a1b2c3d4e5f and 000123",
]


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def test_basic_properties(tok):
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert 4096 <= len(tok) <= 8192
    ids = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    assert None not in ids and len(ids) == 3
    assert tok.eos_token == "<|endoftext|>"
    # no BOS/EOS is added on encode: packing adds EOS itself, and eval sees the same token streams
    assert tok("hello world")["input_ids"] == tok.encode("hello world", add_special_tokens=False)


def test_save_pretrained_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(again, PreTrainedTokenizerFast)
    assert len(again) == len(tok)
    for name in ("bos_token", "eos_token", "pad_token"):
        assert getattr(again, name) == getattr(tok, name)
    for s in SAMPLES:
        assert again.encode(s) == tok.encode(s)
        assert again.decode(tok.encode(s)) == s
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    assert again.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == tok.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    assert load_tokenizer(str(tmp_path)).encode(SAMPLES[0]) == tok.encode(SAMPLES[0])


def test_decode_round_trips(tok):
    for s in SAMPLES:
        assert tok.decode(tok.encode(s)) == s


def test_digits_are_single_tokens(tok):
    vocab = tok.get_vocab()
    for d in "0123456789":
        assert d in vocab
    # no learned token mixes a digit with anything else, so every number is one token per digit
    specials = set(SPECIAL_TOKENS)
    mixed = [t for t in vocab if t not in specials and any(c.isdigit() for c in t) and len(t) > 1]
    assert mixed == []
    rng = random.Random(0)
    for _ in range(50):
        n = str(rng.randint(1, 10**9))
        pieces = [tok.decode([i]) for i in tok.encode(" " + n)]
        assert pieces == [" "] + list(n)


def test_a_fact_is_a_handful_of_tokens(tok):
    """Keys and values of the embedded corpus are short, so a small model can copy them."""
    rng = random.Random(1)
    key_lens, fact_lens = [], []
    for _ in range(300):
        key, value = synthetic.make_key(rng, "word"), synthetic.make_value(rng, "number")
        key_lens.append(len(tok.encode(" " + key)))
        fact = rng.choice(synthetic.FACTS).format(thing=rng.choice(synthetic.THINGS["number"]), key=key, value=value)
        fact_lens.append(len(tok.encode(fact)))
        assert len(tok.encode(" " + value)) == len(value) + 1
    assert sum(key_lens) / len(key_lens) <= 7 and max(key_lens) <= 12
    assert sum(fact_lens) / len(fact_lens) <= 26
    # common words are single tokens
    for w in (" the", " number", " code", " for", " is", " key", " text", " answer", " question"):
        assert len(tok.encode(w)) == 1, w


def test_chat_template_matches_render_chat(tok):
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "A."},
        {"role": "user", "content": "more"},
    ]
    for gen in (False, True):
        assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen) == render_chat(msgs, gen)
    assert render_chat(msgs[1:2], True) == "<|user|>\nQ?<|end|>\n<|assistant|>\n"
    assert tok.chat_template == CHAT_TEMPLATE
    for marker in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        assert len(tok.encode(marker)) == 1
    with pytest.raises(Exception, match="chat roles"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
    with pytest.raises(ValueError, match="chat roles"):
        render_chat([{"role": "tool", "content": "x"}])


def test_load_tokenizer_specs(tok):
    assert load_tokenizer(None).encode("abc") == tok.encode("abc")
    assert load_tokenizer("default").encode("abc") == tok.encode("abc")
    assert load_tokenizer(tok) is tok
    with pytest.raises(UsageError, match="tokenizer '/no/such/dir' could not be loaded"):
        load_tokenizer("/no/such/dir")


def test_shipped_file_is_valid_json_with_specials():
    data = json.loads(open(tokenizer_file(), encoding="utf-8").read())
    added = {t["content"] for t in data["added_tokens"]}
    assert set(SPECIAL_TOKENS) <= added


@pytest.mark.slow
def test_build_script_reproduces_the_shipped_tokenizer(tmp_path):
    """~5 s: retrains the BPE. Fails if tokenizers/wonderwords changed what training produces;
    then rerun `python -m longctx.data.build_tokenizer` and ship the new file."""
    from longctx.data.build_tokenizer import main

    out = tmp_path / "tokenizer.json"
    assert main(["--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(open(tokenizer_file(), encoding="utf-8").read())
