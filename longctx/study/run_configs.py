"""The longctx run configs a study's stages train with: one pretraining config per unit, one
extension config per method, written to <out>/configs/ and passed as `--config`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from longctx.errors import UsageError
from longctx.shipped import configs_dir, shipped_config
from longctx.study.load import merge, parse_study, units
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


def nested(dotted: dict) -> dict:
    """{"extend.rope.temperature": "auto"} -> {"extend": {"rope": {"temperature": "auto"}}}."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def extend_config(study: dict, name: str) -> dict:
    """The run config of one of extend.methods: a method's config file with extend.overrides, or for a
    variant (extend.variants) its method's, with the variant's `set` on top."""
    ext = study["extend"]
    variant = (ext.get("variants") or {}).get(name) or {"method": name}
    method = variant["method"]
    template = ext.get("config", "configs/extend/{method}-64k.yaml").format(method=method)
    p = shipped_config(template) or Path(template)  # from the current directory, else the shipped configs/
    if not p.is_file():
        raise StudyError(f"extend.config {template!r} for {name}: no such file")
    cfg = merge(yaml.safe_load(p.read_text()) or {}, ext.get("overrides") or {})
    cfg = merge(cfg, nested(variant.get("set") or {}))
    cfg.setdefault("extend", {})
    cfg["extend"].update({"method": method, "target": int(ext["target"])})
    if study.get("device"):
        cfg["device"] = study["device"]
    return cfg


def check_run_configs(study: dict, path: str) -> None:
    """Every stage's run config as longctx.config reads it: a bad pretrain or extend.overrides key or
    value fails here, before anything runs, instead of in the stage that uses it."""
    from longctx.config import from_dict, validate

    for _unit, model, seed in units(study):
        try:
            validate(from_dict(pretrain_config(study, model, seed)))
        except UsageError as e:
            raise StudyError(f"{path}: pretrain (for {model}): {e}") from None
    import rope_methods

    for name in study["extend"]["methods"]:
        try:
            cfg = from_dict(extend_config(study, name))
            validate(cfg)
            rope_methods.get(cfg.extend.method).options(**cfg.extend.rope)
        except (UsageError, ValueError) as e:
            what = "extend.overrides" + (
                f" and extend.variants.{name}.set" if name in (study["extend"].get("variants") or {}) else ""
            )
            raise StudyError(f"{path}: extend ({name}, with {what}): {e}") from None


def write_configs(study: dict, stages: list[Stage]) -> None:
    d = Path(study["out"]) / "configs"
    d.mkdir(parents=True, exist_ok=True)
    for unit, model, seed in units(study):
        (d / f"pretrain-{unit}.yaml").write_text(yaml.safe_dump(pretrain_config(study, model, seed), sort_keys=False))
    for method in study["extend"]["methods"]:
        (d / f"extend-{method}.yaml").write_text(yaml.safe_dump(extend_config(study, method), sort_keys=False))


def load_study(path: str) -> dict:
    """The study dict of a study YAML, checked: the schema, the extra runs, and every stage's run config."""
    s = parse_study(path)
    check_run_configs(s, path)
    return s
