"""The default tokenizer (shipped byte-level BPE) and tokenizer loading by name or path.

The shipped `tokenizer.json` is produced by `python -m longctx.data.build_tokenizer`; shipping it
keeps every run's vocabulary identical and avoids training at start-up.
"""

from __future__ import annotations

from importlib import resources

from longctx.errors import UsageError

BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = (EOS, BOS, PAD, *(f"<|{r}|>" for r in ROLES), END_OF_TURN)

# One turn = "<|role|>\n{content}<|end|>\n"; the generation prompt opens an assistant turn.
# render_chat() below is the same format in Python, used to write chat-style training documents.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('chat roles are system, user, assistant; got ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Python twin of CHAT_TEMPLATE (tests check they agree)."""
    out = []
    for m in messages:
        if m["role"] not in ROLES:
            raise ValueError(f"chat roles are {', '.join(ROLES)}; got {m['role']!r}")
        out.append(f"<|{m['role']}|>\n{m['content']}{END_OF_TURN}\n")
    if add_generation_prompt:
        out.append("<|assistant|>\n")
    return "".join(out)


def tokenizer_file() -> str:
    return str(resources.files("longctx.data") / "tokenizer.json")


def wrap(backend, **kwargs):
    """A `tokenizers.Tokenizer` with our special tokens as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        add_bos_token=False,
        add_eos_token=False,
        **kwargs,
    )


def default_tokenizer():
    """The shipped byte-level BPE (8192 tokens, digits split singly) as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer

    return wrap(Tokenizer.from_file(tokenizer_file()))


def load_tokenizer(spec=None):
    """`None`/"default"/"embedded" -> default_tokenizer(); a model dir or HF name -> AutoTokenizer.

    A tokenizer object is returned unchanged. Raises UsageError when it cannot be loaded or has
    no EOS token (packing needs one between documents).
    """
    if spec is None or spec in ("default", "embedded"):
        return default_tokenizer()
    if not isinstance(spec, str):
        tok = spec
    else:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(spec)
        except Exception as e:  # noqa: BLE001 -- any load failure is a bad user value
            raise UsageError(
                f"tokenizer {spec!r} could not be loaded "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "accepted: 'default', a local model/tokenizer dir, or a Hugging Face tokenizer name"
            ) from None
    if tok.eos_token_id is None:
        raise UsageError(f"tokenizer {spec!r} has no eos token; packing needs one between documents")
    return tok
