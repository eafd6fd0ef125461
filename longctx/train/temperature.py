"""DRoPE's softmax temperature at the end of `longctx extend`: fix or fit c, then fold beta.

    beta = 1 + c * ln(target / base)          (rope_methods.drope; softmax(beta * q.k / sqrt(d)))

`extend.rope.temperature: C` uses c = C. `auto` fits c after training: an objective on held-out
sequences at the target length is measured on the grid C_GRID, then a golden-section search refines
c between the grid neighbours of the best point. Every c tried and its value go into the record.
The objective (`extend.rope.temperature_fit`):
- "nll" (the paper's perplexity fit): the mean next-token NLL of FIT_SEQUENCES sequences of the run's
  own data source, drawn with another seed than training's (heldout_batches);
- "answer": the mean NLL of the answer tokens of FIT_ANSWERS key-value retrieval documents of the
  training corpus's wording (longctx.train.probe.own_kv_samples, held-out seeds), each a whole
  sequence at the target length (answer_batches). The whole-sequence NLL is dominated by tokens
  that need no long-range lookup; this one is the retrieval a long-context benchmark asks for.

The record (c, beta, the layers, the fit) is written to OUT/drope_temperature.json and to
longctx_train.json ("temperature"); the HF export carries beta folded into the weights
(longctx.model.temperature). Training checkpoints keep the unfolded weights, so a resumed run or
`longctx export` folds from the same starting point.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from rope_methods.drope import beta as beta_of

FILE = "drope_temperature.json"
FIT_SEQUENCES = 4
FIT_ANSWERS = 16
ANSWER_ROOM = 256  # tokens left after each retrieval prompt for its answer (at most a quarter of the length)
OBJECTIVES = {
    "nll": "mean next-token NLL",
    "answer": "mean NLL of the answer tokens of key-value retrieval documents",
}
SHORT = {"nll": "NLL", "answer": "answer NLL"}  # the objectives in progress lines
C_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)
GOLDEN_STEPS = 6
HELDOUT_SEED = 1_000_003  # added to the run's seed: held-out draws, not the training stream
_INV_PHI = (math.sqrt(5) - 1) / 2


def heldout_batches(cfg, tokenizer, target: int, batch_size: int) -> list[dict]:
    """ceil(FIT_SEQUENCES / batch_size) loader batches of batch_size x target tokens."""
    from longctx.train.data import loader_factory
    from longctx.train.loop import Stage

    make = loader_factory(dataclasses.replace(cfg, seed=cfg.seed + HELDOUT_SEED), tokenizer)
    it = iter(make(Stage("heldout", target, batch_size, 1), ahead=False))
    return [next(it) for _ in range(-(-FIT_SEQUENCES // batch_size))]


def answer_batches(tokenizer, target: int, batch_size: int, seed: int) -> list[dict]:
    """ceil(FIT_ANSWERS / batch_size) batches of batch_size x target tokens, one retrieval document a row:
    its prompt, the answer (as the probe scores it: after a space), padding to the target; labels only
    on the answer tokens (IGNORE_INDEX elsewhere), positions and document bounds as the loader's."""
    import numpy as np
    import torch

    from longctx.data.packing import IGNORE_INDEX, pack_batch
    from longctx.errors import UsageError
    from longctx.train.probe import encode, own_kv_samples

    n = -(-FIT_ANSWERS // batch_size) * batch_size
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    room = target - min(ANSWER_ROOM, target // 4)
    fitting = []
    for k in (n, 4 * n):  # at a few hundred tokens some documents come out longer than asked: skip those
        drawn = [(encode(tokenizer, q), a) for q, a, _ in own_kv_samples(tokenizer, room, k, seed)]
        fitting = [(p, a) for p, a in drawn if len(p) < target][:n]
        if len(fitting) == n:
            break
    else:
        raise UsageError(f"--target {target}: too short for the answer fit's retrieval documents; give 1024 or more")
    rows, labels = [], []
    for p, answer in fitting:
        a = tokenizer.encode(" " + answer, add_special_tokens=False)[: target - len(p)]
        row, lab = np.full(target, pad, dtype=np.int64), np.full(target, IGNORE_INDEX, dtype=np.int64)
        row[: len(p) + len(a)] = p + a
        lab[len(p) - 1 : len(p) - 1 + len(a)] = a  # labels[t] is the token after position t
        rows.append(row)
        labels.append(lab)
    batches = []
    for i in range(0, n, batch_size):
        tokens = np.concatenate(rows[i : i + batch_size] + [np.array([pad])])
        doc_ids = np.repeat(np.arange(batch_size + 1), [target] * batch_size + [1])
        b = pack_batch(tokens, doc_ids, batch_size, target)
        b["labels"] = torch.from_numpy(np.stack(labels[i : i + batch_size]))
        b["num_tokens"] = int((b["labels"] != IGNORE_INDEX).sum())
        batches.append(b)
    return batches


def fit_batches(fit: str, cfg, tokenizer, target: int, batch_size: int) -> list[dict]:
    """The held-out batches objective `fit` is measured on (same seeds in extend and `longctx temperature`)."""
    if fit == "answer":  # needs no run config (cfg None: seed 0)
        return answer_batches(tokenizer, target, batch_size, seed=(cfg.seed if cfg is not None else 0) + HELDOUT_SEED)
    return heldout_batches(cfg, tokenizer, target, batch_size)


def fit_c(nll_at, grid=C_GRID, steps: int = GOLDEN_STEPS) -> tuple[float, list[dict]]:
    """argmin over c >= 0 of nll_at(c): the grid, then golden-section search between the best grid
    point's neighbours. Returns (c, [{"c", "nll"}, ...] in the order tried)."""
    tried: list[dict] = []

    def f(c):
        nll = float(nll_at(c))
        tried.append({"c": c, "nll": nll})
        return nll

    values = [f(c) for c in grid]
    i = min(range(len(grid)), key=values.__getitem__)
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    a, b = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(steps - 2):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _INV_PHI * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _INV_PHI * (hi - lo)
            fb = f(b)
    best = min(tried, key=lambda r: r["nll"])
    return best["c"], tried


class DropeTemperature:
    """What `train_and_export` does with a DRoPE temperature: `resolve` on every rank after training
    (the auto fit runs forwards of the sharded model), `fold` on the exported model (rank 0)."""

    def __init__(self, setting, *, base_len: int, target: int, heldout=None, fit: str = "nll"):
        self.setting, self.base_len, self.target, self.fit = setting, base_len, target, fit
        self.heldout = heldout  # () -> list of batches (fit_batches); needed for "auto"

    def resolve(self, trainer) -> dict:
        """The record: c (fixed, or fitted with the trainer's model on held-out batches) and beta."""
        from longctx.model.temperature import temperature

        model = trainer.model
        if self.setting != "auto":
            return self.record(model.config, float(self.setting))
        batches = self.heldout()

        def nll_at(c):
            with temperature(model, beta_of(c, self.base_len, self.target)):
                return trainer.heldout_nll(batches)

        c, tried = fit_c(nll_at)
        n = sum(int(b["input_ids"].shape[0]) for b in batches)
        return self.record(
            model.config,
            c,
            fit={
                "sequences": n,
                "seq_len": self.target,
                "by": self.fit,
                "objective": OBJECTIVES[self.fit],
                "tried": sorted(tried, key=lambda r: r["c"]),
            },
        )

    def record(self, config, c: float, fit: dict | None = None) -> dict:
        from longctx.model.temperature import temperature_layers

        out = {
            "method": "drope",
            "setting": self.setting,
            "base_len": self.base_len,
            "target": self.target,
            "s": self.target / self.base_len,
            "layers": temperature_layers(config),
            "c": c,
            "beta": beta_of(c, self.base_len, self.target),
        }
        if fit is not None:
            out["fit"] = fit
        return out

    @staticmethod
    def fold(model, record: dict) -> None:
        from longctx.model.temperature import fold_temperature

        fold_temperature(model, record["beta"])

    @staticmethod
    def write(out: Path, record: dict) -> None:
        tmp = Path(out) / f".{FILE}.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(Path(out) / FILE)

    @staticmethod
    def describe(record: dict) -> str:
        layers = ", ".join(map(str, record["layers"])) or "none (no full-attention layer without RoPE)"
        text = (
            f"DRoPE temperature c = {record['c']:.4g}, beta = 1 + c ln({record['target']}/{record['base_len']}) "
            f"= {record['beta']:.4g}, folded into the q_norm weights of layers {layers}"
        )
        fit = record.get("fit")
        if fit:
            at0 = next((r["nll"] for r in fit["tried"] if r["c"] == 0.0), None)
            best = min(r["nll"] for r in fit["tried"])
            what = SHORT[fit.get("by", "nll")]  # records written before `by` existed are NLL fits
            text += (
                f" (auto: held-out {what} {best:.4f} vs {at0:.4f} at c = 0, {fit['sequences']} sequences of "
                f"{fit['seq_len']} tokens, {len(fit['tried'])} values of c tried)"
            )
        return text
