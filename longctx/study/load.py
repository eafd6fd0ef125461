"""The study file: its `base:` overlays, its checks (study.schema plus the cross-field ones), and
what it expands to: the pretraining units (model x pretraining seed), the method of each name in
extend.methods (a method, or a variant of one) and the extra extension runs."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from longctx.shipped import shipped_config
from longctx.study import schema
from longctx.study.stage import StudyError


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def overlay(base: dict, over: dict) -> dict:
    """`over` merged into `base` for a study's `base:` file: dicts merge key by key, other values
    replace, and a null removes the key (`models: {transformer: null}` keeps only the hybrid)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def read_study(path: str, chain: tuple = ()) -> dict:
    """A study YAML with its `base:` (a study file it varies, relative to it) applied, recursively."""
    p = shipped_config(path) or Path(path)  # configs/experiments/x.yaml also from an installed wheel
    if not p.is_file():
        raise StudyError(f"{path}: no such study file" + (f" (base of {chain[-1]})" if chain else ""))
    if p.resolve() in chain:
        raise StudyError(f"{path}: base files loop ({' -> '.join(str(c) for c in chain + (p.resolve(),))})")
    try:
        s = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise StudyError(f"{path}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__}{at})") from None
    if not isinstance(s, dict):
        raise StudyError(f"{path}: a study file is a mapping of keys (name, models, pretrain, extend, eval)")
    base = s.pop("base", None)
    if base is None:
        return s
    return overlay(read_study(str(p.parent / base), chain + (p.resolve(),)), s)


def parse_study(path: str) -> dict:
    """The study dict of a study YAML, checked: the schema and the extra runs (run_configs.load_study
    also checks every stage's run config)."""
    s = read_study(path)
    schema.check(s, path)
    pretrain_seeds(path, s["pretrain"])
    s["extend"]["budgets"] = [budget_entry(path, s, b) for b in s["extend"].get("budgets") or []]
    s["extend"]["seeds"] = [seed_entry(path, s, e) for e in s["extend"].get("seeds") or []]
    _check_temperature_sources(path, s)
    for arch in s["models"]:
        tags = [r["tag"] for r in extra_runs(s, arch)]
        twice = sorted({t for t in tags if tags.count(t) > 1})
        if twice:
            raise StudyError(
                f"{path}: extend.budgets/seeds name {arch}/{twice[0]} twice: give each step count or seed once"
            )
    s.setdefault("out", f"runs/{s['name']}")
    if s["out"] is None:
        s["out"] = f"runs/{s['name']}"
    return s


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def pretrain_seeds(path, pre: dict) -> list[int]:
    """pretrain.seeds (a list of seeds: every model is pretrained, gated, extended and evaluated once per
    seed), else [pretrain.seed] (default 0)."""
    seeds = pre.get("seeds", [pre.get("seed", 0)])
    if not (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)
        and len(set(seeds)) == len(seeds)
    ):
        raise StudyError(
            f"{path}: pretrain.seeds {seeds!r}: give a list of different whole numbers >= 0, e.g. [0, 1, 2]"
        )
    if "seeds" in pre and "seed" in pre:
        raise StudyError(f"{path}: pretrain has both seed and seeds: give one")
    return seeds


def units(study: dict) -> list[tuple[str, str, int]]:
    """(unit, model, seed) for every pretraining the study runs: one per model and pretraining seed. The
    unit names the run directory (<out>/<unit>/base, <out>/<unit>/<method>) and the stages; it is the
    model's label alone when the study has one seed, <model>-s<seed> otherwise. Row labels in the
    tables stay the model's, so the seeds of one (model, method) form one row with their spread."""
    seeds = pretrain_seeds(study.get("name", "study"), study["pretrain"])
    return [(arch if len(seeds) == 1 else f"{arch}-s{seed}", arch, seed) for arch in study["models"] for seed in seeds]


def variant(study: dict, name: str) -> tuple[str, dict]:
    """(rope method, run-config keys it sets) of a name in extend.methods: a method itself sets none;
    an extend.variants entry {method: drope, set: {extend.rope.temperature: auto}} its `set`."""
    v = (study["extend"].get("variants") or {}).get(name)
    return (name, {}) if v is None else (v["method"], dict(v.get("set") or {}))


def added_temperature(study: dict, name: str):
    """The temperature (auto or c) of a variant that adds one to its drope run, else None."""
    v = (study["extend"].get("variants") or {}).get(name)
    return None if v is None else v.get("temperature")


def _check_temperature_sources(path, s: dict) -> None:
    """A temperature variant needs its method's run beside it in every list that names it."""
    ext = s["extend"]
    lists = [("extend.methods", ext["methods"])]
    lists += [(f"extend.budgets ({b['steps']} steps)", b["methods"]) for b in ext["budgets"]]
    lists += [(f"extend.seeds (seed {e['seed']})", e["methods"]) for e in ext["seeds"]]
    for where, names in lists:
        for name in names:
            if added_temperature(s, name) is not None and variant(s, name)[0] not in names:
                raise StudyError(
                    f"{path}: {where} has {name} without {variant(s, name)[0]}: its temperature is added to "
                    f"that run; list both"
                )


def budget_entry(path, s: dict, b) -> dict:
    """An extend.budgets entry {steps: N, models: [...], methods: [...]}, checked, with models and
    methods filled in (all of the study's when left out)."""
    if not isinstance(b, dict) or not _positive_int(b.get("steps")):
        raise StudyError(f"{path}: extend.budgets entry {b!r}: needs steps: a positive whole number")
    return _fill_models_methods(path, s, "extend.budgets", b)


def seed_entry(path, s: dict, e) -> dict:
    """An extend.seeds entry {seed: N, models: [...], methods: [...], lengths: [...]}, checked; models and
    methods default to all of the study's, lengths to eval.lengths."""
    seed = e.get("seed") if isinstance(e, dict) else None
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise StudyError(f"{path}: extend.seeds entry {e!r}: needs seed: a whole number >= 0")
    e = _fill_models_methods(path, s, "extend.seeds", e)
    lengths = e.setdefault("lengths", list(s["eval"]["lengths"]))
    if not isinstance(lengths, list) or not lengths or not all(_positive_int(n) for n in lengths):
        raise StudyError(f"{path}: extend.seeds lengths {lengths!r}: give a list of token counts, e.g. [32768]")
    return e


ENTRY_KEYS = {
    "extend.budgets": ("steps", "models", "methods"),
    "extend.seeds": ("seed", "models", "methods", "lengths"),
}


def _fill_models_methods(path, s: dict, where: str, entry: dict) -> dict:
    entry = dict(entry)
    unknown = [k for k in entry if k not in ENTRY_KEYS[where]]
    if unknown:
        raise StudyError(
            f"{path}: unknown key {where}[].{unknown[0]!r} in {entry!r}; valid keys: {', '.join(ENTRY_KEYS[where])}"
        )
    for key, known in (("models", list(s["models"])), ("methods", s["extend"]["methods"])):
        bad = [x for x in entry.setdefault(key, known) if x not in known]
        if bad:
            raise StudyError(f"{path}: {where} {key} {bad}: give some of {', '.join(known)}")
    return entry


def extra_runs(study: dict, arch: str, seed: int | None = None) -> list[dict]:
    """The extra extensions of one model, in the study file's order: extend.budgets (other step counts),
    then extend.seeds (other seeds, evaluated at their own lengths). Each: method, tag, flags, label, lengths.
    seed: the pretraining unit's seed where a study has several (its extensions take it): budget runs
    take it too, and an extend.seeds run with that very seed is left out (it would repeat the main run)."""
    ext = study["extend"]
    own = [] if seed is None else ["--seed", str(seed)]
    runs = [
        {
            "method": m,
            "tag": f"{m}-{b['steps']}steps",
            "flags": ["--steps", str(b["steps"]), *own],
            "label": f"{arch} {m} ({b['steps']} steps)",
            "lengths": None,
        }
        for b in ext.get("budgets", [])
        if arch in b["models"]
        for m in b["methods"]
    ]
    runs += [
        {
            "method": m,
            "tag": f"{m}-seed{e['seed']}",
            "flags": ["--seed", str(e["seed"])],
            "label": f"{arch} {m} (seed {e['seed']})",
            "lengths": e["lengths"],
        }
        for e in ext.get("seeds", [])
        if arch in e["models"] and e["seed"] != seed
        for m in e["methods"]
    ]
    return runs
