"""Regenerate the shipped default tokenizer: `python -m longctx.data.build_tokenizer [--out PATH]`.

A byte-level BPE trained on the embedded corpus (the book, a fixed sample of generated documents,
and the key word lists), with every digit its own token so numbers in facts cost one token per
digit and are never merged into arbitrary chunks. Training is deterministic for a fixed input, so
rerunning this reproduces `longctx/data/tokenizer.json`.
"""

from __future__ import annotations

import argparse

from longctx.data.tokenizer import SPECIAL_TOKENS, tokenizer_file

VOCAB_SIZE = 8192


def training_texts(n_docs: int = 3000) -> list[str]:
    from longctx.data import text
    from longctx.data.embedded import EmbeddedSource

    src = EmbeddedSource(seed=0, doc_chars=(500, 8000))
    docs = [text.book()] + [src.document(i) for i in range(n_docs)]
    # Key words appear in the corpus only when drawn; list them so the common ones become tokens.
    w = text.words()
    docs += [" ".join(w[k]) for k in ("noun", "adjective", "verb")] * 3
    return docs


def build(vocab_size: int = VOCAB_SIZE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_texts(), trainer=trainer)
    return tok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=tokenizer_file(), help="where to write tokenizer.json")
    ap.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = ap.parse_args(argv)
    tok = build(args.vocab_size)
    tok.save(args.out)
    print(f"wrote {args.out} ({tok.get_vocab_size()} tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
