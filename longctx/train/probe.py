"""A cheap RULER retrieval probe to run during training.

Tiny models can train for hours and retrieve nothing; the loss does not show it. The probe runs a
few needle-in-a-haystack samples (generated once, with RULER's own generator, templates and
scoring) through greedy decoding every N steps, so a run that is not learning retrieval is seen
early. Beside the scores it logs the teacher-forced NLL of the reference answer, which falls as
retrieval forms, well before whole values come out right.

    probe = RetrievalProbe(tokenizer, lengths=(1024, 4096), samples=8)
    metrics = probe.probe(model, device)   # {"probe/niah_single_1@1024": 62.5, ..., "probe/mean": 40.3,
                                           #  "probe/nll/niah_single_1@1024": 0.41, ..., "probe/nll_mean": 0.9}

Prompts are rendered as lm-eval renders them (input + " " + answer prefix, special tokens as the
tokenizer adds them), generation stops at EOS or max_gen_toks (RULER's niah tasks have no stop
strings), scores are `eval_tasks.ruler.score`, 0..100.
"""

from __future__ import annotations

import torch

from longctx.errors import UsageError

DEFAULT_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3")
MODES = ("auto", "cache", "forward")
# Retrieval in the training corpus's own wording (longctx.data.synthetic.kv_recall, held-out seeds),
# scored like RULER's needles (every reference value in the output). With the RULER tasks beside it,
# the probe tells "cannot retrieve" from "retrieves, but not in RULER's wording".
OWN_TASKS = ("own_kv",)


def render(sample: dict) -> str:
    """The prompt string lm-eval's HF model gets for a sample without a chat template: a target
    delimiter " " only when neither side already has whitespace at the joint."""
    text, prefix = sample["input"], sample["gen_prefix"]
    delim = " " if text and prefix and not (text[-1].isspace() or prefix[0].isspace()) else ""
    return text + delim + prefix


def encode(tokenizer, prompt: str) -> list[int]:
    # lm-eval's HFLM adds special tokens unless the prompt already starts with BOS
    bos = getattr(tokenizer, "bos_token", None)
    return tokenizer.encode(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))


class RetrievalProbe:
    """RULER samples generated once at construction; `probe(model, device)` scores a model on them.

    mode: "cache" decodes with longctx.model.generate.greedy_generate (HybridLM, single process);
    "forward" re-runs `model(input_ids)` on the whole sequence for every new token (any module
    returning logits [B, T, V]; also FSDP-wrapped models, called on every rank); "auto" picks
    "cache" when the model and the generate module allow it.
    """

    def __init__(
        self,
        tokenizer,
        lengths=(1024, 4096),
        tasks=DEFAULT_TASKS,
        samples: int = 8,
        seed: int = 42,
        haystack: str = "auto",
        mode: str = "auto",
        max_gen_toks: int | None = None,
    ):
        import eval_tasks.ruler as ruler

        if mode not in MODES:
            raise UsageError(f"probe mode {mode!r} is unknown; accepted: {', '.join(MODES)}")
        bad = [t for t in tasks if t not in ruler.TASKS and t not in OWN_TASKS]
        if bad:
            raise UsageError(f"probe task {bad[0]!r} is unknown; accepted: {', '.join(ruler.TASKS + OWN_TASKS)}")
        if samples < 1 or not lengths or any(int(n) < 1 for n in lengths):
            raise UsageError(f"probe needs samples >= 1 (got {samples}) and positive lengths (got {tuple(lengths)})")
        self.tokenizer = tokenizer
        self.mode = mode
        self.eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        self.items: dict[tuple[str, int], list[tuple[list[int], int, list[str]]]] = {}
        self.answers: dict[tuple[str, int], list[list[int]]] = {}
        for task in tasks:
            for n in lengths:
                if task in OWN_TASKS:
                    own = own_kv_samples(tokenizer, int(n), samples, seed)
                    self.items[(task, int(n))] = [(encode(tokenizer, p), max_gen_toks or g, [a]) for p, a, g in own]
                    self.answers[(task, int(n))] = [
                        tokenizer.encode(" " + a, add_special_tokens=False) for _, a, _ in own
                    ]
                    continue
                try:
                    gen = ruler.generate(task, int(n), samples, tokenizer, seed=seed, haystack=haystack)
                except ruler.LengthTooShort as e:
                    raise UsageError(f"probe length {n} is too short for {task}: {e}") from None
                self.items[(task, int(n))] = [
                    (encode(tokenizer, render(s)), max_gen_toks or int(s["max_gen_toks"]), list(s["outputs"]))
                    for s in gen
                ]
                # the first reference as the model should continue the prompt (lm-eval: after a space)
                self.answers[(task, int(n))] = [
                    tokenizer.encode(" " + s["outputs"][0], add_special_tokens=False) for s in gen
                ]

    @torch.no_grad()
    def probe(self, model, device=None) -> dict[str, float]:
        """Scores per task@length and their mean, keys `probe/<task>@<length>` and `probe/mean`.
        The model is put in eval mode for the probe and back in its previous mode afterwards."""
        import eval_tasks.ruler as ruler

        if device is None:
            device = next(model.parameters()).device
        decode = self._decoder(model)
        was_training = model.training
        model.eval()
        try:
            out, nll = {}, {}
            for (task, n), items in self.items.items():
                ids = decode(model, [p for p, _, _ in items], [g for _, g, _ in items], torch.device(device))
                preds = [self.tokenizer.decode(x, skip_special_tokens=True) for x in ids]
                scored_as = "niah_single_1" if task in OWN_TASKS else task  # string_match_all
                out[f"probe/{task}@{n}"] = float(ruler.score(scored_as, preds, [r for _, _, r in items]))
                losses = [
                    _answer_nll(model, p, a, device)
                    for (p, _, _), a in zip(items, self.answers[(task, n)], strict=True)
                ]
                nll[f"probe/nll/{task}@{n}"] = round(sum(losses) / len(losses), 4)
        finally:
            model.train(was_training)
        out["probe/mean"] = round(sum(out.values()) / len(out), 2)
        out.update(nll)
        out["probe/nll_mean"] = round(sum(nll.values()) / len(nll), 4)
        return out

    def _decoder(self, model):
        mode = self.mode
        if mode == "auto":
            mode = "cache" if _cache_ok(model) else "forward"
        if mode == "cache":
            from longctx.model import prefix
            from longctx.model.generate import greedy_generate

            return lambda m, prompts, budgets, device: greedy_generate(
                m, prompts, budgets, eos_token_ids=self.eos, share_prefixes=prefix.DEFAULT_ON
            )
        return lambda m, prompts, budgets, device: [
            _forward_greedy(m, p, g, self.eos, device) for p, g in zip(prompts, budgets, strict=True)
        ]


def own_kv_samples(tokenizer, n_tokens: int, samples: int, seed: int) -> list[tuple[str, str, int]]:
    """(prompt, answer, token budget) of `samples` key-value documents of about n_tokens tokens in
    the training corpus's wording: intro, facts in filler, the question, its answer prefix. The
    answer is every asked value ("A, B and C"); seeds are offset far from the training stream's."""
    import random

    from longctx.data import synthetic
    from longctx.data.embedded import chars_per_token

    cpt = chars_per_token(tokenizer, n=4)["kv"]
    out = []
    for i in range(samples):
        chars = int(n_tokens * cpt * 0.9)
        for _ in range(8):  # digit-heavy documents take more tokens per character: shrink until it fits
            rng = random.Random(f"probe-own-kv/{seed}/{n_tokens}/{i}")
            intro, body, question, prefix, answer = synthetic.kv_recall(rng, chars)
            prompt = f"{intro}\n\n{body}\n\n{question}\n{prefix}"
            used = len(tokenizer.encode(prompt))
            if used <= n_tokens:
                break
            chars = int(chars * n_tokens / used * 0.97)
        answer = answer.rstrip(".")
        out.append((prompt, answer, len(tokenizer.encode(" " + answer, add_special_tokens=False)) + 8))
    return out


def _cache_ok(model) -> bool:
    """The cached decoder reads a plain HybridLM's submodules: not under FSDP (sharded parameters
    are only gathered by the wrapped modules' own forwards) nor context parallelism."""
    from longctx.model import HybridLM

    if not isinstance(model, HybridLM) or getattr(model, "context_parallel", None) is not None:
        return False
    try:
        from torch.distributed.fsdp import FSDPModule

        if isinstance(model, FSDPModule):
            return False
    except ImportError:
        pass
    from longctx.model import generate

    try:
        generate.check_cacheable(model)
    except ValueError:
        return False
    return True


def _forward_greedy(model, prompt: list[int], budget: int, eos: set[int], device) -> list[int]:
    """Greedy decoding by a full forward per token: slow, but needs nothing but logits."""
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    out: list[int] = []
    for _ in range(budget):
        tok = int(model(ids)[0, -1].argmax())
        if tok in eos:
            break
        out.append(tok)
        ids = torch.cat([ids, ids.new_tensor([[tok]])], 1)
    return out


def _answer_nll(model, prompt: list[int], answer: list[int], device) -> float:
    """Mean teacher-forced NLL (nats/token) of the answer after the prompt. Retrieval shows here long
    before greedy decoding gets a whole value right: ~ln(10) a digit for a model that guesses."""
    ids = torch.tensor([prompt + answer], dtype=torch.long, device=device)
    span = slice(len(prompt) - 1, ids.shape[1] - 1)
    if hasattr(model, "forward_hidden"):  # logits of the answer positions only (64k x vocab would not fit)
        h = model.forward_hidden(ids)[0, span]
        logits = torch.nn.functional.linear(h.to(model.lm_head.weight.dtype), model.lm_head.weight)
    else:
        logits = model(ids)[0, span]
    target = torch.tensor(answer, dtype=torch.long, device=logits.device)
    return float(torch.nn.functional.cross_entropy(logits.float(), target))


def build_probe(cfg, tokenizer) -> RetrievalProbe | None:
    """The run's probe from its `probe:` config (None when probe.interval is 0); validates before OUT is written."""
    p = cfg.probe
    if not p.interval:
        return None
    return RetrievalProbe(tokenizer, lengths=tuple(p.lengths), tasks=tuple(p.tasks), samples=p.samples, seed=p.seed)
