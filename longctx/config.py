"""Typed run configs: dataclasses filled from YAML, then overridden by CLI flags.

A run config YAML looks like (every key optional; see the dataclasses for defaults):

    model: hybrid-tiny          # a name in configs/models, a model YAML path, or inline HF fields
    seq_len: 4096
    batch_size: 8
    steps: 1000                 # or tokens: 2.0e9
    optimizer: {lr: 3.0e-4, weight_decay: 0.1, grad_clip: 1.0}
    schedule: {name: cosine, warmup_steps: 100, min_lr_ratio: 0.1}
    data: {source: null, doc_mask: true}
    checkpoint: {interval: 500, keep: 2}
    extend: {method: yarn, target: 65536, rope: {beta_fast: 32, beta_slow: 1}}

A YAML with none of these keys is taken to be a model config (`--config configs/models/x.yaml`).
Bad keys or values raise UsageError with one line naming them, before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longctx.errors import UsageError
from longctx.shipped import shipped_config

SCHEDULES = ("cosine", "linear", "wsd", "constant")
LOSS_BACKENDS = ("auto", "chunked", "compiled", "chunked-fla", "fla")  # longctx.train.loss.make_loss_fn


@dataclass
class OptimizerConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | linear | wsd | constant, each after a linear warmup
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # the LR the decay ends at, as a fraction of the peak
    decay_fraction: float = 0.2  # wsd: the share of the steps spent decaying at the end


@dataclass
class DataConfig:
    source: str | None = None  # None = the embedded default corpus
    tokenizer: str | None = None  # pretrain: None = the shipped default; extend uses the model's
    doc_mask: bool = True  # attention/GDN state do not cross document boundaries
    long_doc_fraction: float | None = None  # documents longer than this share of seq_len count as long
    long_doc_weight: float = 1.0  # relative sampling weight of long documents (long-context training)
    text_field: str = "text"  # the text column of a dataset source
    token_dtype: str = "uint32"  # token files without NumPy's header (dolma's .npy, .bin): their id dtype
    # the embedded corpus only: kinds and weights (longctx.data.embedded.KINDS; None = DEFAULT_MIX) ...
    mix: dict[str, float] | None = None
    # ... and the document size range [min, max] in tokens (None = seq_len/16 .. seq_len) ...
    doc_tokens: list[int] | None = None
    # ... and the haystacks its needle tasks hide facts in (None = book, prose, noise); leaving out
    # `book` keeps a small model from memorising the one shipped book through the filler
    fillers: list[str] | None = None
    # ... and how its needle documents lay out their haystacks (longctx.data.synthetic.Layout; 0 = as
    # prose, the corpus as it always was): the share of noise and all-distractor haystacks laid out one
    # unit per line as RULER's are, and the share of noise haystacks made of short generated sentences
    line_layout: float = 0.0
    short_noise: float = 0.0


@dataclass
class CurriculumStage:
    """A shorter-context pretraining stage run before the main one (short contexts first)."""

    seq_len: int
    fraction: float  # share of the run's steps; the main stage at seq_len gets what is left


@dataclass
class CheckpointConfig:
    interval: int = 1000  # steps between checkpoints; 0 = only at the end
    keep: int = 2  # how many of the newest checkpoints to keep
    # a metrics.jsonl key ("probe/mean"; "-probe/nll_mean" for the lowest): checkpoints/best holds the
    # weights (no optimizer) of the step where it was best so far, with its score in meta.json
    best: str | None = None
    export: str = "last"  # the weights of OUT's HF export: "last" step, or "best" (needs `best`)


@dataclass
class ExtendConfig:
    method: str | None = None  # rope_methods name: yarn, drope, pi, ntk, none
    target: int | None = None  # the context length to extend to
    base_len: int | None = None  # None = inferred from the model
    recalibrate_fraction: float = 0.1  # DRoPE: share of the budget spent at the base length (0: none; 1: all)
    rope: dict = field(default_factory=dict)  # extra options for the method's extend()
    eval: bool = False  # run `longctx eval` 4k..target afterwards


@dataclass
class ProbeConfig:
    """In-training retrieval probe (RULER needles on fixed samples, greedy): is the model learning to retrieve?"""

    interval: int = 0  # steps between probes; 0 = off
    lengths: list[int] = field(default_factory=lambda: [1024, 4096])
    tasks: list[str] = field(default_factory=lambda: ["niah_single_1", "niah_single_2", "niah_single_3"])
    samples: int = 8  # per task and length
    seed: int = 42


@dataclass
class ProfileConfig:
    """torch.profiler over steps start .. start + steps - 1 -> OUT/profile/ (longctx.train.profiling)."""

    start: int = 0  # first profiled step (1-based); 0 = off
    steps: int = 3


@dataclass
class RunConfig:
    model: Any = None  # str (name or path) or dict of HF config fields
    seq_len: int = 2048
    batch_size: int = 8  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    steps: int | None = None  # total optimizer steps of the run
    tokens: int | None = None  # alternative budget: total training tokens
    seed: int = 0
    device: str | None = None  # None = cuda when present, else cpu
    grad_checkpointing: bool | float = False  # true: every block; a fraction: that share (GDN blocks first)
    z_loss: float = 0.0  # coefficient of mean(logsumexp^2)
    loss_chunk: int = 4096  # tokens per cross-entropy chunk
    # auto (chunked-fla on CUDA with fla installed, else chunked) | chunked (ours, any device) | compiled (chunked,
    # softmax gradient via torch.compile) | chunked-fla (chunked, softmax gradient in fla's fused CE kernels, CUDA)
    # | fla (fla's fused linear CE, CUDA, no z-loss)
    loss_backend: str = "auto"
    export_dtype: str | None = None  # dtype of the final HF model; None = float32 (pretrain) / the source's (extend)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    extend: ExtendConfig = field(default_factory=ExtendConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    # pretrain: stages at shorter lengths before seq_len, same tokens per step (batch scaled)
    curriculum: list[CurriculumStage] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def tokens_per_step(self, seq_len: int | None = None) -> int:
        return self.batch_size * self.grad_accum * (seq_len or self.seq_len)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ---------------------------------------------------------------- building from plain data


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value, tp, key: str):
    """Turn a YAML/CLI value into the field's type; strings like '3e-4' are accepted as numbers."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:  # (YAML and --set already turn `null` into None)
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except UsageError:
                continue
        raise UsageError(f"{key}: cannot use {value!r} (expected {_tname(tp)})")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UsageError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise UsageError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise UsageError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UsageError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UsageError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)  # accepts 2e9 and '65536'
        except (TypeError, ValueError):
            raise UsageError(f"{key}: expected an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise UsageError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise UsageError(f"{key}: expected a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(f):
            raise UsageError(f"{key}: expected a finite number, got {value!r}")
        return f
    if tp is str:
        if isinstance(value, (dict, list)):
            raise UsageError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _tname(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _build(cls, data: dict, prefix: str = ""):
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise UsageError(
            f"unknown config key {prefix + str(unknown[0])!r}; known: {', '.join(prefix + n for n in names)}"
        )
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def from_dict(data: dict | None) -> RunConfig:
    return _build(RunConfig, dict(data or {}))


def load_run_config(path: str | Path | None) -> RunConfig:
    """A RunConfig from a run-config YAML, or from a model YAML (which becomes `model: PATH`)."""
    if path is None:
        return RunConfig()
    p = shipped_config(path) or Path(path)  # configs/extend/x.yaml also from an installed wheel
    if not p.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping at the top level")
    run_keys = {f.name for f in dataclasses.fields(RunConfig)}
    if data and not (set(data) & run_keys):
        return RunConfig(model=str(p))
    try:
        return from_dict(data)
    except UsageError as e:
        raise UsageError(f"--config {path}: {e}") from None


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Set dotted keys (`optimizer.lr`) on a copy of cfg; None values are skipped (flag not given)."""
    cfg = dataclasses.replace(cfg)
    for key, value in overrides.items():
        if value is None:
            continue
        obj, parts = cfg, key.split(".")
        for i, part in enumerate(parts[:-1]):
            sub = getattr(obj, part, None)
            if isinstance(sub, dict) and dataclasses.is_dataclass(obj):
                # a free-form mapping (extend.rope): the rest of the key is one entry of it
                setattr(obj, part, {**sub, ".".join(parts[i + 1 :]): value})
                break
            if not dataclasses.is_dataclass(sub):
                raise UsageError(_unknown(key, obj, ".".join(parts[:i])))
            sub = dataclasses.replace(sub)
            setattr(obj, part, sub)
            obj = sub
        else:
            _set_field(obj, parts[-1], value, key)
    return cfg


def _unknown(key: str, obj, prefix: str) -> str:
    """The error for a key that names no field of obj (the dataclass at `prefix`), listing those that do."""
    prefix = f"{prefix}." if prefix else ""
    names = [prefix + f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
    return f"unknown config key {key!r}" + (f"; known: {', '.join(names)}" if names else "")


def _set_field(obj, last: str, value, key: str) -> None:
    if not dataclasses.is_dataclass(obj) or last not in {f.name for f in dataclasses.fields(obj)}:
        raise UsageError(_unknown(key, obj, key.rsplit(".", 1)[0] if "." in key else ""))
    setattr(obj, last, _coerce(value, _hints(type(obj))[last], key))


def parse_set(items: list[str] | None) -> dict[str, str]:
    """`--set key.sub=value` pairs -> {key.sub: value}; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.lr=1e-3")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else None
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


# ---------------------------------------------------------------- validation


def _need(ok: bool, key: str, rule: str, value) -> None:
    if not ok:
        raise UsageError(f"{key} must be {rule}, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Range checks that do not need the model or the data; one line naming the bad value."""
    _need(cfg.seq_len >= 2, "seq_len (--seq-len)", ">= 2", cfg.seq_len)
    _need(cfg.batch_size >= 1, "batch_size (--batch-size)", ">= 1", cfg.batch_size)
    _need(cfg.grad_accum >= 1, "grad_accum (--grad-accum)", ">= 1", cfg.grad_accum)
    if cfg.steps is not None:
        _need(cfg.steps >= 1, "steps (--steps)", ">= 1", cfg.steps)
    if cfg.tokens is not None:
        _need(cfg.tokens >= 1, "tokens (--tokens)", ">= 1", cfg.tokens)
    if cfg.steps is not None and cfg.tokens is not None:
        raise UsageError(f"give steps ({cfg.steps}) or tokens ({cfg.tokens}), not both")
    _need(0 <= cfg.seed < 2**32, "seed (--seed)", "an integer in [0, 2**32)", cfg.seed)  # numpy's seed range
    _need(cfg.loss_chunk >= 1, "loss_chunk", ">= 1", cfg.loss_chunk)
    _need(cfg.loss_backend in LOSS_BACKENDS, "loss_backend", "one of " + ", ".join(LOSS_BACKENDS), cfg.loss_backend)
    _need(
        not (cfg.loss_backend == "fla" and cfg.z_loss > 0),
        "z_loss with loss_backend fla",
        "0 (fla has no z-loss)",
        cfg.z_loss,
    )
    _need(
        not (cfg.loss_backend in ("fla", "chunked-fla") and cfg.device == "cpu"),
        f"loss_backend {cfg.loss_backend} on device",
        "cuda (fla's kernels are Triton; chunked or compiled run on the CPU)",
        cfg.device,
    )
    _need(
        cfg.export_dtype in (None, "float32", "bfloat16", "float16"),
        "export_dtype",
        "float32, bfloat16 or float16",
        cfg.export_dtype,
    )
    _need(cfg.z_loss >= 0, "z_loss (--z-loss)", ">= 0", cfg.z_loss)
    _need(
        cfg.device in (None, "cpu", "cuda") or str(cfg.device).startswith("cuda:"),
        "device (--device)",
        "cpu or cuda",
        cfg.device,
    )
    o = cfg.optimizer
    _need(o.lr > 0, "optimizer.lr (--lr)", "> 0", o.lr)
    _need(all(0 <= b < 1 for b in o.betas), "optimizer.betas", "two numbers in [0, 1)", list(o.betas))
    _need(o.eps > 0, "optimizer.eps", "> 0", o.eps)
    _need(o.weight_decay >= 0, "optimizer.weight_decay (--weight-decay)", ">= 0", o.weight_decay)
    _need(o.grad_clip >= 0, "optimizer.grad_clip (--grad-clip)", ">= 0 (0 = off)", o.grad_clip)
    s = cfg.schedule
    _need(s.name in SCHEDULES, "schedule.name (--schedule)", "one of " + ", ".join(SCHEDULES), s.name)
    _need(s.warmup_steps >= 0, "schedule.warmup_steps (--warmup-steps)", ">= 0", s.warmup_steps)
    _need(0 <= s.min_lr_ratio <= 1, "schedule.min_lr_ratio", "in [0, 1]", s.min_lr_ratio)
    _need(0 <= s.decay_fraction <= 1, "schedule.decay_fraction", "in [0, 1]", s.decay_fraction)
    if cfg.data.long_doc_fraction is not None:
        _need(cfg.data.long_doc_fraction > 0, "data.long_doc_fraction", "> 0", cfg.data.long_doc_fraction)
    _need(cfg.data.long_doc_weight > 0, "data.long_doc_weight", "> 0", cfg.data.long_doc_weight)
    from longctx.data.token_files import DTYPES

    _need(cfg.data.token_dtype in DTYPES, "data.token_dtype", "one of " + ", ".join(DTYPES), cfg.data.token_dtype)
    if cfg.data.mix is not None or cfg.data.doc_tokens is not None:
        from longctx.data.embedded import KINDS, valid_mix, valid_range

        if cfg.data.mix is not None:
            _need(
                valid_mix(cfg.data.mix),
                "data.mix",
                f"weights >= 0 (not all 0) for kinds among {', '.join(KINDS)}",
                cfg.data.mix,
            )
        if cfg.data.doc_tokens is not None:
            _need(
                valid_range(cfg.data.doc_tokens),
                "data.doc_tokens",
                "[min, max] with 1 <= min <= max",
                cfg.data.doc_tokens,
            )
    if cfg.data.fillers is not None:
        from longctx.data.synthetic import HAYSTACKS

        f = cfg.data.fillers
        _need(bool(f) and all(k in HAYSTACKS for k in f), "data.fillers", f"some of {', '.join(HAYSTACKS)}", f)
    for name in ("line_layout", "short_noise"):
        v = getattr(cfg.data, name)
        _need(isinstance(v, (int, float)) and 0 <= v <= 1, f"data.{name}", "a share in [0, 1]", v)
    for i, st in enumerate(cfg.curriculum):
        _need(2 <= st.seq_len < cfg.seq_len, f"curriculum[{i}].seq_len", f"in [2, seq_len={cfg.seq_len})", st.seq_len)
        _need(0 < st.fraction < 1, f"curriculum[{i}].fraction", "in (0, 1)", st.fraction)
    _need(
        sum(st.fraction for st in cfg.curriculum) < 1,
        "the curriculum fractions",
        "summing to < 1",
        [st.fraction for st in cfg.curriculum],
    )
    c = cfg.checkpoint
    _need(c.interval >= 0, "checkpoint.interval (--checkpoint-interval)", ">= 0 (0 = only at the end)", c.interval)
    _need(c.keep >= 1, "checkpoint.keep", ">= 1", c.keep)
    _need(c.export in ("last", "best"), "checkpoint.export", "'last' or 'best'", c.export)
    _need(
        c.export == "last" or bool(c.best),
        "checkpoint.export",
        "'last' unless checkpoint.best names a metric",
        c.export,
    )
    if c.best is not None:
        _need(
            isinstance(c.best, str) and c.best.lstrip("-") != "",
            "checkpoint.best",
            "a metrics key, e.g. probe/mean or -probe/nll_mean",
            c.best,
        )
        _need(
            not c.best.lstrip("-").startswith("probe/") or cfg.probe.interval > 0,
            "checkpoint.best",
            "a probe metric only with probe.interval > 0",
            c.best,
        )
    e = cfg.extend
    if e.target is not None:
        _need(e.target >= 2, "extend.target (--target)", ">= 2", e.target)
    if e.base_len is not None:
        _need(e.base_len >= 2, "extend.base_len (--base-len)", ">= 2", e.base_len)
    _need(
        0 <= e.recalibrate_fraction <= 1,
        "extend.recalibrate_fraction",
        "in [0, 1] (0: no base-length stage; 1: the base length only)",
        e.recalibrate_fraction,
    )
    gc = cfg.grad_checkpointing
    _need(
        isinstance(gc, bool) or 0 <= gc <= 1,
        "grad_checkpointing (--grad-checkpointing)",
        "true, false or a fraction of the blocks in [0, 1]",
        gc,
    )
    _need(cfg.probe.interval >= 0, "probe.interval", ">= 0 (0 = off)", cfg.probe.interval)
    _need(cfg.probe.samples >= 1, "probe.samples", ">= 1", cfg.probe.samples)
    _need(0 <= cfg.probe.seed < 2**32, "probe.seed", "an integer in [0, 2**32)", cfg.probe.seed)
    _need(cfg.profile.start >= 0, "profile.start", ">= 0 (0 = off)", cfg.profile.start)
    _need(cfg.profile.steps >= 1, "profile.steps", ">= 1", cfg.profile.steps)


def resolve_steps(cfg: RunConfig, seq_len: int | None = None, *, default: int | None = None) -> int:
    """Total optimizer steps: cfg.steps, or cfg.tokens over the tokens one step consumes."""
    if cfg.steps is not None:
        return cfg.steps
    if cfg.tokens is not None:
        return max(1, math.ceil(cfg.tokens / cfg.tokens_per_step(seq_len)))
    if default is not None:
        return default
    raise UsageError("no training budget: give --steps N or --tokens T (or steps:/tokens: in the config)")
