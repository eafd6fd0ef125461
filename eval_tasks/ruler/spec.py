"""The 13 RULER tasks: NVIDIA's templates, answer prefixes, generation budgets and task arguments.

Strings are NVIDIA/RULER's `scripts/data/synthetic/constants.py`; arguments are its
`scripts/synthetic.yaml`; names are lm-eval's (`ruler_vt` is RULER's `vt`, `ruler_qa_squad` its
`qa_1`, ...).
"""

from __future__ import annotations

import numpy as np

TASKS = (
    "niah_single_1",
    "niah_single_2",
    "niah_single_3",
    "niah_multikey_1",
    "niah_multikey_2",
    "niah_multikey_3",
    "niah_multivalue",
    "niah_multiquery",
    "ruler_vt",
    "ruler_cwe",
    "ruler_fwe",
    "ruler_qa_squad",
    "ruler_qa_hotpot",
)

TEMPLATES = {
    "niah": {
        "tokens_to_generate": 128,
        "template": "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} mentioned in the provided text?",
        "answer_prefix": " The special magic {type_needle_v} for {query} mentioned in the provided text are",
    },
    "variable_tracking": {
        "tokens_to_generate": 30,
        "template": "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: Find all variables that are assigned the value {query} in the text above.",
        "answer_prefix": " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the value {query}, they are: ",
    },
    "common_words_extraction": {
        "tokens_to_generate": 120,
        "template": "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?",
        "answer_prefix": " Answer: The top 10 words that appear most often in the list are:",
    },
    "freq_words_extraction": {
        "tokens_to_generate": 50,
        "template": "Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?",
        "answer_prefix": " Answer: According to the coded text above, the three most frequently appeared words are:",
    },
    "qa": {
        "tokens_to_generate": 32,
        "template": "Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}",
        "answer_prefix": " Answer:",
    },
}

TASK_SPECS = {
    "niah_single_1": {
        "kind": "niah",
        "type_haystack": "noise",
        "type_needle_k": "words",
        "type_needle_v": "numbers",
        "num_needle_k": 1,
        "num_needle_v": 1,
        "num_needle_q": 1,
    },
    "niah_single_2": {
        "kind": "niah",
        "type_haystack": "essay",
        "type_needle_k": "words",
        "type_needle_v": "numbers",
        "num_needle_k": 1,
        "num_needle_v": 1,
        "num_needle_q": 1,
    },
    "niah_single_3": {
        "kind": "niah",
        "type_haystack": "essay",
        "type_needle_k": "words",
        "type_needle_v": "uuids",
        "num_needle_k": 1,
        "num_needle_v": 1,
        "num_needle_q": 1,
    },
    "niah_multikey_1": {
        "kind": "niah",
        "type_haystack": "essay",
        "type_needle_k": "words",
        "type_needle_v": "numbers",
        "num_needle_k": 4,
        "num_needle_v": 1,
        "num_needle_q": 1,
    },
    "niah_multikey_2": {
        "kind": "niah",
        "type_haystack": "needle",
        "type_needle_k": "words",
        "type_needle_v": "numbers",
        "num_needle_k": 1,
        "num_needle_v": 1,
        "num_needle_q": 1,
    },
    "niah_multikey_3": {
        "kind": "niah",
        "type_haystack": "needle",
        "type_needle_k": "uuids",
        "type_needle_v": "uuids",
        "num_needle_k": 1,
        "num_needle_v": 1,
        "num_needle_q": 1,
    },
    "niah_multivalue": {
        "kind": "niah",
        "type_haystack": "essay",
        "type_needle_k": "words",
        "type_needle_v": "numbers",
        "num_needle_k": 1,
        "num_needle_v": 4,
        "num_needle_q": 1,
    },
    "niah_multiquery": {
        "kind": "niah",
        "type_haystack": "essay",
        "type_needle_k": "words",
        "type_needle_v": "numbers",
        "num_needle_k": 1,
        "num_needle_v": 1,
        "num_needle_q": 4,
    },
    "ruler_vt": {"kind": "variable_tracking", "type_haystack": "noise", "num_chains": 1, "num_hops": 4},
    "ruler_cwe": {"kind": "common_words_extraction", "freq_cw": 30, "freq_ucw": 3, "num_cw": 10, "num_fewshot": 1},
    "ruler_fwe": {"kind": "freq_words_extraction", "alpha": 2.0, "coded_wordlen": 6, "vocab_size": -1},
    "ruler_qa_squad": {"kind": "qa", "dataset": "squad"},
    "ruler_qa_hotpot": {"kind": "qa", "dataset": "hotpotqa"},
}

# RULER's "repeat"/"noise" haystack sentence and its needle sentence.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
# Needle depths (percent): np.round(np.linspace(0, 100, 40)).astype(int), as NVIDIA draws them.
DEPTHS = [int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int)]
DOCUMENT_PROMPT = "Document {i}:\n{document}"


def max_gen_toks(task: str) -> int:
    return TEMPLATES[TASK_SPECS[task]["kind"]]["tokens_to_generate"]


def niah_strings(num_needle_q: int, num_needle_v: int) -> tuple[str, str, bool]:
    """(template, answer prefix, singular) for a NIAH task; singular when one value is asked for.

    NVIDIA applies the same replacements to `template + answer_prefix`; no pattern spans the
    seam between the two, so applying them to each part separately gives the same strings.
    """
    template = TEMPLATES["niah"]["template"]
    prefix = TEMPLATES["niah"]["answer_prefix"]
    if num_needle_q * num_needle_v != 1:
        return template, prefix, False
    out = []
    for s in (template, prefix):
        for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
            s = s.replace(old, new)
        out.append(s)
    return out[0], out[1], True
