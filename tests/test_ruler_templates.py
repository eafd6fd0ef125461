"""Samples against NVIDIA/RULER's templates, written here literally from RULER's
scripts/data/synthetic/constants.py, and against what each task asks (the chain, the word
frequencies, the documents), checked by parsing the prompt independently of the generator."""

import json
import re
from collections import Counter

import pytest
from scipy.special import zeta
from test_ruler_generate import exact_length, make_tokenizer

from eval_tasks.ruler import generate
from eval_tasks.ruler.words import cwe_words, english_words, wonderwords_lists

# --- NVIDIA/RULER scripts/data/synthetic/constants.py
NIAH_T = """Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} mentioned in the provided text?"""
NIAH_P = """ The special magic {type_needle_v} for {query} mentioned in the provided text are"""
VT_T = """Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: Find all variables that are assigned the value {query} in the text above."""
VT_P = """ Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the value {query}, they are: """
CWE_T = """Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?"""
CWE_P = """ Answer: The top 10 words that appear most often in the list are:"""
FWE_T = """Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?"""
FWE_P = """ Answer: According to the coded text above, the three most frequently appeared words are:"""
QA_T = """Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}"""
QA_P = """ Answer:"""
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NIAH = {  # scripts/synthetic.yaml: haystack, key type, value type, k, v, q
    "niah_single_1": ("noise", "words", "numbers", 1, 1, 1),
    "niah_single_2": ("essay", "words", "numbers", 1, 1, 1),
    "niah_single_3": ("essay", "words", "uuids", 1, 1, 1),
    "niah_multikey_1": ("essay", "words", "numbers", 4, 1, 1),
    "niah_multikey_2": ("needle", "words", "numbers", 1, 1, 1),
    "niah_multikey_3": ("needle", "uuids", "uuids", 1, 1, 1),
    "niah_multivalue": ("essay", "words", "numbers", 1, 4, 1),
    "niah_multiquery": ("essay", "words", "numbers", 1, 1, 4),
}
VALUE_RE = {
    "numbers": r"[1-9]\d{6}",
    "uuids": r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    "words": r"[^\n]+?-[^\n]+?",  # wonderwords has "ad hoc"
}


def nvidia_niah(type_v, k, v, q, context, query):
    """NVIDIA niah.py: template + answer prefix, singular when q * v == 1, split at the prefix."""
    template = NIAH_T + NIAH_P
    if q * v == 1:
        template = (
            template.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")
        )
        type_v = type_v[:-1]
    text = template.format(type_needle_v=type_v, context=context, query=query)
    cut = text.rfind(NIAH_P[:10])
    return text[:cut], text[cut:]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.mark.parametrize("length", [2048, 8192])
@pytest.mark.parametrize("task", list(NIAH))
def test_niah_matches_nvidia_template(tok, task, length):
    hay, type_k, type_v, k, v, q = NIAH[task]
    k = max(k, q)  # NVIDIA: num_needle_k = max(num_needle_k, num_needle_q)
    nouns, adjs, _ = wonderwords_lists()
    for s in generate(task, length, 3, tok, cache_dir=False, haystack="bundled"):
        needle_re = re.compile(
            re.escape("One of the special magic " + type_v + " for ")
            + f"({VALUE_RE[type_k]}) is: ({VALUE_RE[type_v]})\\."
        )
        found = needle_re.findall(s["input"])
        real = [(key, val) for key, val in found if val in s["outputs"]]
        assert len(real) == q * v and sorted(val for _, val in real) == sorted(s["outputs"])
        if hay == "needle":
            assert len(found) == s["units"] + k * v  # distractors are needles with other keys
        else:
            assert len(found) == k * v
        asked = re.search(r"for (.+) mentioned in the provided text\?$", s["input"]).group(1)
        keys = re.split(r", and |, ", asked)  # asked in RULER's random order
        assert sorted(keys) == sorted({key for key, _ in real})
        if type_k == "words":
            for key in {key for key, _ in found}:
                adj, noun = next(
                    (a, key[len(a) + 1 :]) for a in adjs if key.startswith(a + "-") and key[len(a) + 1 :] in nouns
                )
                assert adj in adjs and noun in nouns
        query = ", ".join(keys[:-1]) + ", and " + keys[-1] if len(keys) > 1 else keys[0]
        assert query == asked
        head = nvidia_niah(type_v, k, v, q, "@@", query)[0].split("@@")[0]
        context = s["input"][len(head) : s["input"].rfind("\nWhat")]
        assert (s["input"], s["gen_prefix"]) == nvidia_niah(type_v, k, v, q, context, query)
        if hay == "noise":
            lines = context.split("\n")
            assert lines.count(NOISE) == s["units"] and len(lines) == s["units"] + k * v
        if hay == "essay":
            for m in needle_re.finditer(context):  # needles sit between sentences
                before, after = context[: m.start()], context[m.end() :]
                assert before == "" or before.endswith(" ")
                assert after == "" or after.startswith(" ")
                at_end = after.strip() == ""  # depth 100: after the last (cut) sentence, as RULER does
                assert (
                    at_end
                    or before.strip() == ""
                    or re.search(r"[.!?][\"')\]]*\s*$", before)
                    or needle_re.search(before[-200:])
                )


@pytest.mark.parametrize("length", [2048, 8192])
def test_vt_matches_nvidia_template_and_chain(tok, length):
    for s in generate("ruler_vt", length, 3, tok, cache_dir=False):
        full = s["input"] + s["gen_prefix"]
        cut = full.rfind(VT_T[:20])
        icl, main = full[:cut], full[cut:]
        value = re.search(r"assigned the value (\d{5}), they are: $", s["gen_prefix"]).group(1)
        context = main[len(VT_T.split("{context}")[0]) : main.rfind("\nQuestion:")]
        assert main == (VT_T + VT_P).format(context=context, query=value, num_v=5)
        # the chain: VAR A = value, then 4 hops; the answer is every variable holding the value
        holds, lines = {}, context.split("\n")
        for line in lines:
            if m := re.fullmatch(r"VAR ([A-Z]{5}) = (\d{5})", line):
                holds[m.group(1)] = m.group(2)
            elif m := re.fullmatch(r"VAR ([A-Z]{5}) = VAR ([A-Z]{5}) ", line):
                holds[m.group(1)] = holds[m.group(2)]
            else:
                assert line == NOISE
        assert sorted(x for x, val in holds.items() if val == value) == sorted(s["outputs"]) and len(s["outputs"]) == 5
        assert lines.count(NOISE) == s["units"]
        # the one-shot example: RULER's prompt with 3-letter names, " " + its answer (after the
        # prefix's own trailing space), "\n", then the "\n" that joins it to the prompt
        m = re.fullmatch(
            r"(.*)"
            + re.escape(VT_P.split("{num_v}")[0])
            + r"5 variables are assigned the value (\d{5}), they are:  ((?:[A-Z]{3} ){4}[A-Z]{3})\n\n",
            icl,
            re.S,
        )
        assert m, icl[-300:]
        icl_ctx = m.group(1)[len(VT_T.split("{context}")[0]) : m.group(1).rfind("\nQuestion:")]
        assert m.group(1) == VT_T.format(context=icl_ctx, query=m.group(2))
        names = {}
        for line in icl_ctx.split("\n"):
            if mm := re.fullmatch(r"VAR ([A-Z]{3}) = (\d{5})", line):
                names[mm.group(1)] = mm.group(2)
            elif mm := re.fullmatch(r"VAR ([A-Z]{3}) = VAR ([A-Z]{3}) ", line):
                names[mm.group(1)] = names[mm.group(2)]
        assert sorted(m.group(3).split()) == sorted(names)
        # sized to <= 500 tokens before its names and value were redrawn (which shifts it a little)
        icl_prompt = icl[: icl.rfind("they are: ") + len("they are: ")]
        assert 400 < len(tok(icl_prompt, add_special_tokens=False).input_ids) <= 560


def _numbered(text):
    """Words of "1. w 2. w ..." (some wonderwords entries hold a space), checking the numbering."""
    parts, words, i = re.split(r"(?:^| )(\d+)\. ", text)[1:], [], 1
    for num, word in zip(parts[0::2], parts[1::2], strict=True):
        if int(num) != i:  # a number inside a word would break the sequence: rejoin it
            words[-1] += f" {num}. {word}"
            continue
        words.append(word)
        i += 1
    return words


@pytest.mark.parametrize("length,ex,cr,ucr", [(2048, (20, 3, 1), 6, 1), (8192, (40, 10, 3), 30, 3)])
def test_cwe_matches_nvidia_template_and_counts(tok, length, ex, cr, ucr):
    pool = set(cwe_words()) | set(english_words())
    for s in generate("ruler_cwe", length, 2, tok, cache_dir=False):
        example, main = s["input"].split("\n" + CWE_T[:30], 1)
        main = CWE_T[:30] + main
        ctx = main[len(CWE_T.split("{context}")[0]) : main.rfind("\nQuestion:")]
        assert main + s["gen_prefix"] == (CWE_T + CWE_P).format(context=ctx)
        counts = Counter(_numbered(ctx))
        assert sorted(counts.values(), reverse=True) == [cr] * 10 + [ucr] * (len(counts) - 10)
        assert sorted(w for w, c in counts.items() if c == cr) == sorted(s["outputs"])
        assert len(counts) == s["units"] and set(counts) <= pool
        ex_ctx = example[len(CWE_T.split("{context}")[0]) : example.rfind("\nQuestion:")]
        ex_answer = example.split(CWE_P + " ", 1)[1]
        assert example == (CWE_T + CWE_P).format(context=ex_ctx) + " " + ex_answer
        ex_counts = Counter(_numbered(ex_ctx))
        n_words, ex_cr, ex_ucr = ex
        assert len(ex_counts) == n_words and sorted(ex_counts.values(), reverse=True) == [ex_cr] * 10 + [ex_ucr] * (
            n_words - 10
        )
        assert sorted(_numbered(ex_answer)) == sorted(w for w, c in ex_counts.items() if c == ex_cr)


@pytest.mark.parametrize("length", [2048, 8192])
def test_fwe_matches_nvidia_template_and_zipf(tok, length):
    for s in generate("ruler_fwe", length, 2, tok, cache_dir=False):
        ctx = s["input"][len(FWE_T.split("{context}")[0]) : s["input"].rfind("\nQuestion:")]
        assert s["input"] + s["gen_prefix"] == (FWE_T + FWE_P).format(context=ctx)
        counts = Counter(ctx.split(" "))
        ranked = [w for w, _ in counts.most_common()]
        freq = [counts[w] for w in ranked]
        assert ranked[0] == "..." and sorted(ranked[1:4]) == sorted(s["outputs"])
        assert len(set(freq[:4])) == 4  # ranks 1-4 are unambiguous
        vocab = (length - 50) // 50
        assert len(counts) <= vocab and all(re.fullmatch("[a-z]{6}", w) for w in ranked[1:])
        # counts are RULER's floor(n * k^-2 / zeta(2)) for the n the sizer chose
        n = s["units"]
        expected = [int(n * k**-2.0 / zeta(2.0)) for k in range(1, vocab + 1)]
        assert freq == [c for c in expected if c > 0]


def _squad(n_articles=6, paras=4):
    data = []
    for a in range(n_articles):
        paragraphs = []
        for p in range(paras):
            ctx = f"Article {a} paragraph {p}. " + " ".join(
                f"The fact number {j} of topic {a}-{p} is fact{a}x{p}x{j}." for j in range(30)
            )
            paragraphs.append({"context": ctx, "qas": [
                {"question": f"What is fact 3 of topic {a}-{p}?", "answers": [{"text": f"fact{a}x{p}x3"}, {"text": f"FACT{a}x{p}x3 indeed"}], "is_impossible": False},
                {"question": "Unanswerable?", "answers": [], "is_impossible": True},
            ]})  # fmt: skip
        data.append({"title": f"t{a}", "paragraphs": paragraphs})
    return {"data": data}


def _hotpot(n=30):
    return [
        {
            "question": f"Which town hosts event {i}?",
            "answer": f"Town{i}",
            "context": [
                [f"Title {i}-{j}", [f"Sentence one of {i}-{j}. ", f"Event {i} happens in Town{i} on day {j}."]]
                for j in range(4)
            ],
        }
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "task,name,data", [("ruler_qa_squad", "squad.json", _squad()), ("ruler_qa_hotpot", "hotpotqa.json", _hotpot())]
)
def test_qa_matches_nvidia_template_and_documents(tok, tmp_path, task, name, data):
    (tmp_path / name).write_text(json.dumps(data))
    if task == "ruler_qa_squad":
        docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
        qas = [
            (qa["question"], [a["text"] for a in qa["answers"]], [p["context"]])
            for d in data["data"]
            for p in d["paragraphs"]
            for qa in p["qas"]
            if not qa["is_impossible"]
        ]
    else:
        docs = sorted({f"{t}\n{''.join(p)}" for d in data for t, p in d["context"]})
        qas = [(d["question"], [d["answer"]], [f"{t}\n{''.join(p)}" for t, p in d["context"]]) for d in data]
    for length in (1024, 2048):
        samples = generate(task, length, 3, tok, qa_cache_dir=str(tmp_path), cache_dir=False)
        for i, s in enumerate(samples):
            query, answers, gold = qas[i]
            assert s["outputs"] == answers and s["qa_source"].endswith(f"({name})")
            ctx = s["input"][len(QA_T.split("{context}")[0]) : s["input"].rfind("\n\nAnswer the question")]
            assert s["input"] + s["gen_prefix"] == (QA_T + QA_P).format(context=ctx, query=query)
            blocks = re.split(r"(?:^|\n\n)Document (\d+):\n", ctx)[1:]
            numbers, texts = [int(x) for x in blocks[0::2]], blocks[1::2]
            assert numbers == list(range(1, len(texts) + 1)) and len(texts) == s["units"]
            assert set(texts) <= set(docs) and len(set(texts)) == len(texts)
            assert set(gold) <= set(texts), "the gold documents are always in"
            assert exact_length(tok, s) == s["length"] <= length
