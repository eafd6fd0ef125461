"""The study YAML's schema: one dataclass per section, each checking its own fields.

`check(study, path)` builds these from the study dict (after its `base:` overlay): a key that no
section defines is refused with the valid ones listed, a value of the wrong type or out of range
with one line naming the key and the value (StudyError, exit code 2, before anything is written).
The runner keeps working on the checked dict. `pretrain` and `extend.overrides` are longctx run
configs: longctx.config checks their keys (study.run_configs.load_study builds every stage's run config).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from longctx.config import _build
from longctx.errors import UsageError
from longctx.study.stage import StudyError

REQUIRED = ("name", "models", "pretrain", "extend", "eval")


def _need(ok: bool, key: str, rule: str, value) -> None:
    if not ok:
        raise StudyError(f"{key} {value!r}: {rule}")


def _whole(x, least: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= least


@dataclass
class ModelSpec:
    """models.<label>: a configs/models name (or model YAML path) and HF config fields to override."""

    model: str | None = None
    override: dict | None = None

    def check(self, at: str) -> None:
        _need(bool(self.model), f"{at}.model", "give a configs/models name or a model YAML path", self.model)


@dataclass
class VariantSpec:
    """extend.variants.<name>: a rope method whose extension config also sets these run-config keys
    (dotted, as `longctx extend --set` takes them, e.g. extend.rope.temperature: auto); or, with
    `temperature` (auto or c > 0), DRoPE's softmax temperature added to the unit's own drope run of the
    same budget and seed by `longctx temperature`, with no training of its own; `per_length: true`
    evaluates it (or a trained variant that sets extend.rope.temperature) with beta set for each length
    (1 + c ln(L / base), 1 up to the base length); `fit`
    (nll or answer, with temperature: auto) is what the fit minimises (`longctx temperature --fit`)."""

    method: str | None = None
    set: dict | None = None
    temperature: Any = None
    per_length: bool = False  # with a temperature: evaluate with `longctx eval --temperature-per-length`
    fit: str | None = None  # with temperature: auto, `longctx temperature --fit` (nll, the default, or answer)

    def check(self, at: str) -> None:
        import rope_methods

        trained_temperature = "extend.rope.temperature" in (self.set or {})
        _need(
            not self.per_length or self.temperature is not None or trained_temperature,
            f"{at}.per_length",
            "applies to a temperature: give temperature too, or set extend.rope.temperature",
            self.per_length,
        )

        from rope_methods.drope import FIT_CHOICES

        _need(
            self.fit is None or (self.temperature == "auto" and self.fit in FIT_CHOICES),
            f"{at}.fit",
            "give nll or answer, with temperature: auto",
            self.fit,
        )
        if self.temperature is not None:
            t = self.temperature
            number = isinstance(t, (int, float)) and not isinstance(t, bool)
            _need(t == "auto" or (number and 0 < t < float("inf")), f"{at}.temperature", "give auto or a number > 0", t)
            _need(
                self.method == "drope", f"{at}.method", "a temperature is added to drope runs: give drope", self.method
            )
            _need(not self.set, f"{at}.set", "a temperature variant trains nothing of its own: leave set out", self.set)

        _need(
            self.method in rope_methods.METHODS,
            f"{at}.method",
            f"give one of {', '.join(rope_methods.METHODS)}",
            self.method,
        )
        keys = list(self.set or {})
        _need(
            all(isinstance(k, str) for k in keys),
            f"{at}.set",
            "map dotted run-config keys to values, e.g. {extend.rope.temperature: auto}",
            self.set,
        )
        fixed = [k for k in keys if k in ("extend.method", "extend.target")]
        _need(not fixed, f"{at}.set", "the study sets these (the variant's method, extend.target)", fixed)
        nulls = [k for k in keys if self.set[k] is None]
        _need(not nulls, f"{at}.set", "give each key a value (a null sets nothing)", nulls)


VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # it names run directories, stages and config files


@dataclass
class ExtendSection:
    target: int | None = None  # the context length every method extends to
    methods: list[str] = field(default_factory=list)  # rope_methods names and variants' names
    config: str = "configs/extend/{method}-64k.yaml"  # each method's run config ({method} filled in)
    overrides: dict | None = None  # run-config keys set alike for every method
    variants: dict | None = None  # name -> VariantSpec: a method with run-config keys of its own
    budgets: list[Any] | None = None  # extra runs with other step counts (study.load.budget_entry)
    seeds: list[Any] | None = None  # extra runs with other seeds (study.load.seed_entry)

    def check(self, at: str) -> None:
        import rope_methods

        for name, raw in (self.variants or {}).items():
            _need(
                isinstance(name, str) and bool(VARIANT_NAME.fullmatch(name)),
                f"{at}.variants",
                "name a variant with letters, digits, '-', '_' and '.', e.g. drope-temp",
                name,
            )
            _need(
                name not in rope_methods.METHODS,
                f"{at}.variants",
                "the name of a method: give the variant a name of its own, e.g. drope-temp",
                name,
            )
            _build_section(VariantSpec, raw, f"{at}.variants.{name}").check(f"{at}.variants.{name}")
        variants = list(self.variants or {})
        bad = [m for m in self.methods if m not in rope_methods.METHODS and m not in variants]
        _need(
            bool(self.methods) and not bad,
            f"{at}.methods",
            f"give some of the methods {', '.join(rope_methods.METHODS)}"
            + (f" and the variants {', '.join(variants)}" if variants else " (or variants, named in extend.variants)"),
            bad or self.methods,
        )
        _need(self.target is not None, f"{at}.target", "missing (e.g. 65536)", self.target)
        _need(self.target >= 2, f"{at}.target", "give a length in tokens, e.g. 65536", self.target)


@dataclass
class EvalSection:
    lengths: list[int] = field(default_factory=list)  # RULER lengths of every extended model
    base_lengths: list[int] | None = None  # RULER lengths of the base models (default: pretrain.seq_len)
    tasks: list[str] = field(default_factory=lambda: ["all"])
    samples: int = 100  # per task and length
    args: list[str] | None = None  # more `longctx eval` flags, e.g. [--dtype, bfloat16]

    def check(self, at: str) -> None:
        _need(
            bool(self.lengths) and all(n >= 1 for n in self.lengths),
            f"{at}.lengths",
            "give a list of token counts, e.g. [4096, 8192]",
            self.lengths,
        )
        _need(
            self.base_lengths is None or (self.base_lengths and all(n >= 1 for n in self.base_lengths)),
            f"{at}.base_lengths",
            "give a list of token counts, e.g. [4096]",
            self.base_lengths,
        )
        _need(bool(self.tasks), f"{at}.tasks", "give RULER task names or [all]", self.tasks)
        _need(self.samples >= 1, f"{at}.samples", "give a positive whole number", self.samples)


@dataclass
class GateSection:
    """The retrieval gate: each gated base model must reach `min` on `tasks` at `length`."""

    models: list[str] = field(default_factory=list)  # the gated models' labels
    length: int | None = None
    tasks: list[str] = field(default_factory=list)
    min: float = 0.0  # a score 0..100
    samples: int | None = None  # a gate stage of its own with this many samples per task

    def check(self, at: str, labels: list[str]) -> None:
        bad = [m for m in self.models if m not in labels]
        _need(not bad, f"{at}.models", f"give some of {', '.join(labels)}", bad)
        _need(
            self.samples is None or self.samples >= 1,
            f"{at}.samples",
            "give a positive whole number (or leave it out: the base row decides)",
            self.samples,
        )
        if self.models:
            _need(
                self.length is not None and self.length >= 1,
                f"{at}.length",
                "give a length in tokens, e.g. 4096",
                self.length,
            )
            _need(bool(self.tasks), f"{at}.tasks", "give the RULER tasks that decide, e.g. [niah_single_1]", self.tasks)
            _need(0 <= self.min <= 100, f"{at}.min", "give a score between 0 and 100", self.min)


@dataclass
class StudyFile:
    name: str = ""
    models: dict | None = None  # label -> ModelSpec
    pretrain: dict | None = None  # a longctx run config shared by every model (plus seeds)
    extend: ExtendSection = field(default_factory=ExtendSection)
    eval: EvalSection = field(default_factory=EvalSection)
    gate: GateSection = field(default_factory=GateSection)  # no gated models: no gate
    out: str | None = None  # the study directory (default runs/<name>)
    device: str | None = None  # passed to every stage (--device)
    title: str | None = None  # results.md's title

    def check(self) -> None:
        _need(bool(self.name), "name", "give the study a name", self.name)
        _need(
            isinstance(self.models, dict) and bool(self.models),
            "models",
            "map a label (e.g. hybrid) to {model: NAME, override: {...}}",
            self.models,
        )
        for label, spec in self.models.items():
            _build_section(ModelSpec, spec, f"models.{label}").check(f"models.{label}")
        self.extend.check("extend")
        self.eval.check("eval")
        self.gate.check("gate", list(self.models))


def _build_section(cls, raw, at: str):
    if not isinstance(raw, dict):
        raise StudyError(f"{at} {raw!r}: expected a mapping of keys ({', '.join(cls.__dataclass_fields__)})")
    try:
        return _build(cls, raw, at + ".")
    except UsageError as e:
        raise StudyError(_valid_keys(str(e))) from None


def _valid_keys(msg: str) -> str:
    return msg.replace("unknown config key", "unknown key").replace("; known: ", "; valid keys: ")


def check(study: dict, path: str) -> StudyFile:
    """The study dict as typed sections, or StudyError naming the file and the bad key."""
    try:
        missing = [k for k in REQUIRED if k not in study]
        if missing:
            raise StudyError(f"missing top-level key {missing[0]!r} (needs {', '.join(REQUIRED)})")
        _need(
            isinstance(study["pretrain"], dict),
            "pretrain",
            "expected a mapping (a longctx run config)",
            study["pretrain"],
        )
        try:
            typed = _build(StudyFile, {k: v for k, v in study.items() if not (k == "gate" and v is None)})
        except UsageError as e:
            raise StudyError(_valid_keys(str(e))) from None
        typed.check()
        return typed
    except StudyError as e:
        raise StudyError(f"{path}: {e}") from None
