"""The longctx run configs a study's stages train with: one pretraining config per unit, one
extension config per name in extend.methods (a method or a variant), written to <out>/configs/ and
passed as `--config`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from longctx.errors import UsageError
from longctx.shipped import configs_dir, shipped_config
from longctx.study.load import added_temperature, merge, parse_study, units, variant
from longctx.study.stage import Stage, StudyError


def model_fields(spec: dict) -> dict:
    """The HF config fields of a study model: a configs/models YAML (by name or path) + overrides."""
    name = spec.get("model")
    if name and name.endswith((".yaml", ".yml")):
        p = Path(name)
    else:
        p = (configs_dir() or Path("configs")) / "models" / f"{name}.yaml"
    if not p.is_file():
        raise StudyError(f"model {name!r}: no {p}")
    return merge(yaml.safe_load(p.read_text()), spec.get("override") or {})


def _probe_supported() -> bool:
    from longctx.config import RunConfig

    return "probe" in {f.name for f in dataclasses.fields(RunConfig)}


def pretrain_config(study: dict, arch: str, seed: int | None = None) -> dict:
    cfg = merge(study["pretrain"], {"model": model_fields(study["models"][arch])})
    seeds = cfg.pop("seeds", None) or [cfg.get("seed", 0)]
    cfg["seed"] = seeds[0] if seed is None else seed
    probe = cfg.pop("probe", None)
    if probe is not None and _probe_supported():  # the Trainer's in-training RULER probe, once wired
        cfg["probe"] = probe
    if study.get("device"):
        cfg["device"] = study["device"]
    return cfg


def extend_config(study: dict, name: str) -> dict:
    """The extension run config of a name in extend.methods: its method's config file (extend.config),
    then extend.overrides, then a variant's `set` (study.load.variant); extend.method is the method."""
    ext = study["extend"]
    method, keys = variant(study, name)
    template = ext.get("config", "configs/extend/{method}-64k.yaml").format(method=method)
    p = shipped_config(template) or Path(template)  # from the current directory, else the shipped configs/
    if not p.is_file():
        raise StudyError(f"extend.config {template!r} for {method}: no such file")
    cfg = merge(yaml.safe_load(p.read_text()) or {}, ext.get("overrides") or {})
    if keys:
        cfg = set_keys(cfg, keys)
    cfg.setdefault("extend", {})
    cfg["extend"].update({"method": method, "target": int(ext["target"])})
    if study.get("device"):
        cfg["device"] = study["device"]
    return cfg


def trained_methods(study: dict) -> list[str]:
    """The names in extend.methods that train (all but the variants that add a temperature to a run)."""
    return [n for n in study["extend"]["methods"] if added_temperature(study, n) is None]


def set_keys(cfg: dict, keys: dict) -> dict:
    """cfg with dotted run-config keys set as `longctx extend --set` sets them
    (longctx.config.apply_overrides); the top-level sections they change are written out in full."""
    from longctx.config import apply_overrides, from_dict

    before = from_dict(cfg).to_dict()
    after = apply_overrides(from_dict(cfg), keys).to_dict()
    return {**cfg, **{k: v for k, v in after.items() if v != before[k]}}


def check_run_configs(study: dict, path: str) -> None:
    """Every stage's run config as longctx.config reads it: a bad pretrain, extend.overrides or variant
    key or value (extend.rope options too, as the method reads them) fails here, before anything runs,
    instead of in the stage that uses it."""
    import rope_methods
    from longctx.config import from_dict, validate

    for _unit, model, seed in units(study):
        try:
            validate(from_dict(pretrain_config(study, model, seed)))
        except UsageError as e:
            raise StudyError(f"{path}: pretrain (for {model}): {e}") from None
    for name in trained_methods(study):
        method = variant(study, name)[0]
        where = (
            f"method {method}, with extend.overrides"
            if name == method
            else f"variant {name}: method {method}, with extend.overrides and extend.variants.{name}.set"
        )
        try:
            cfg = from_dict(extend_config(study, name))
            validate(cfg)
        except UsageError as e:
            raise StudyError(f"{path}: extend ({where}): {e}") from None
        try:
            rope_methods.get(method).options(**cfg.extend.rope)
        except ValueError as e:
            raise StudyError(f"{path}: extend ({where}): extend.rope: {e}") from None


def write_configs(study: dict, stages: list[Stage]) -> None:
    d = Path(study["out"]) / "configs"
    d.mkdir(parents=True, exist_ok=True)
    for unit, model, seed in units(study):
        (d / f"pretrain-{unit}.yaml").write_text(yaml.safe_dump(pretrain_config(study, model, seed), sort_keys=False))
    for name in trained_methods(study):  # a method's, or a variant's (named after the variant)
        (d / f"extend-{name}.yaml").write_text(yaml.safe_dump(extend_config(study, name), sort_keys=False))


def load_study(path: str) -> dict:
    """The study dict of a study YAML, checked: the schema, the extra runs, and every stage's run config."""
    s = parse_study(path)
    check_run_configs(s, path)
    return s
