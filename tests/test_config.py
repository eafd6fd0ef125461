import pytest

from longctx.config import (
    RunConfig,
    apply_overrides,
    from_dict,
    load_run_config,
    parse_set,
    resolve_steps,
    validate,
)
from longctx.errors import UsageError


def test_yaml_fills_nested_dataclasses_and_coerces_numbers(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(
        "model: hybrid-tiny\nseq_len: 512\ntokens: 2e6\n"
        "optimizer: {lr: 3e-4, betas: [0.9, 0.99]}\n"  # PyYAML reads 3e-4 as a string
        "schedule: {name: wsd, warmup_steps: 10}\n"
        "extend: {method: yarn, target: 65536, rope: {beta_fast: 32}}\n"
    )
    cfg = load_run_config(p)
    assert cfg.model == "hybrid-tiny" and cfg.seq_len == 512 and cfg.tokens == 2_000_000
    assert cfg.optimizer.lr == 3e-4 and cfg.optimizer.betas == (0.9, 0.99)
    assert cfg.optimizer.weight_decay == RunConfig().optimizer.weight_decay  # untouched default
    assert cfg.schedule.name == "wsd" and cfg.extend.rope == {"beta_fast": 32}
    validate(cfg)
    assert resolve_steps(cfg) == -(-2_000_000 // (512 * cfg.batch_size))


def test_model_yaml_is_taken_as_the_model(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("model_type: olmo_hybrid\nhidden_size: 64\n")
    assert load_run_config(p).model == str(p)


def test_overrides_on_a_copy():
    base = RunConfig()
    cfg = apply_overrides(base, {"optimizer.lr": "1e-2", "steps": 7, "seq_len": None, "data.doc_mask": "false"})
    assert cfg.optimizer.lr == 1e-2 and cfg.steps == 7 and cfg.seq_len == base.seq_len and cfg.data.doc_mask is False
    assert base.optimizer.lr == RunConfig().optimizer.lr and base.data.doc_mask is True
    sets = apply_overrides(base, parse_set(["schedule.name=linear", "z_loss=1e-4", "optimizer.betas=[0.8, 0.9]"]))
    assert sets.schedule.name == "linear" and sets.z_loss == 1e-4 and sets.optimizer.betas == (0.8, 0.9)


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"optimzer": {}}, "optimzer"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr"),
        ({"seq_len": 1.5}, "seq_len"),
        ({"grad_checkpointing": "maybe"}, "grad_checkpointing"),
    ],
)
def test_bad_keys_and_types_name_the_key(data, needle):
    with pytest.raises(UsageError, match=needle):
        from_dict(data)


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"steps": -5}, "steps"),
        ({"optimizer.lr": -1}, "lr"),
        ({"optimizer.lr": 0}, "lr"),
        ({"seq_len": 0}, "seq_len"),
        ({"batch_size": 0}, "batch_size"),
        ({"tokens": 0}, "tokens"),
        ({"schedule.name": "step"}, "schedule"),
        ({"extend.recalibrate_fraction": 1.5}, "recalibrate_fraction"),
        ({"device": "tpu"}, "device"),
        ({"loss_backend": "chunked-fla", "device": "cpu"}, "loss_backend chunked-fla on device"),
        ({"loss_backend": "fla", "device": "cpu"}, "loss_backend fla on device"),
        ({"grad_checkpointing": 1.5}, "grad_checkpointing"),
        ({"data.fillers": ["book", "essays"]}, "data.fillers"),
        ({"data.fillers": []}, "data.fillers"),
        ({"data.line_layout": 1.5}, "data.line_layout"),
        ({"data.short_noise": -0.1}, "data.short_noise"),
        ({"grad_checkpointing": -0.25}, "grad_checkpointing"),
    ],
)
def test_validate_rejects_bad_numbers(over, needle):
    with pytest.raises(UsageError, match=needle) as e:
        validate(apply_overrides(RunConfig(), over))
    assert "\n" not in str(e.value)


def test_missing_or_bad_yaml(tmp_path):
    with pytest.raises(UsageError, match="nope.yaml"):
        load_run_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(UsageError, match="bad.yaml"):
        load_run_config(bad)


def test_budget_needs_steps_or_tokens():
    with pytest.raises(UsageError, match="--steps"):
        resolve_steps(RunConfig())
    with pytest.raises(UsageError, match="not both"):
        validate(RunConfig(steps=3, tokens=10))


def test_set_reaches_into_free_form_mappings():
    cfg = apply_overrides(RunConfig(), parse_set(["extend.rope.beta_fast=16", "extend.rope.factor=8"]))
    assert cfg.extend.rope == {"beta_fast": 16, "factor": 8}
    with pytest.raises(UsageError, match="optimizer.nope"):
        apply_overrides(RunConfig(), {"optimizer.nope": 1})


@pytest.mark.parametrize("method", ["yarn", "drope", "pi", "ntk", "none"])
def test_shipped_extend_configs_resolve(method, tmp_path, capsys):
    """Each configs/extend YAML validates, and its dry run against an 8k model gives the method's
    rope_parameters and plan (a config.json is all a dry run reads)."""
    from pathlib import Path

    import yaml
    from transformers import OlmoHybridConfig

    import rope_methods
    from longctx.cli import main

    path = Path(__file__).resolve().parents[1] / "configs" / "extend" / f"{method}-64k.yaml"
    cfg = load_run_config(path)
    validate(cfg)
    assert cfg.extend.method == method and cfg.extend.target == 65536
    rope = {"rope_type": "default", "rope_theta": 500000.0}
    OlmoHybridConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        vocab_size=256,
        max_position_embeddings=8192,
        rope_parameters=rope,
    ).save_pretrained(tmp_path / "m")
    out = tmp_path / "out"
    assert main(["extend", "--config", str(path), "--model", str(tmp_path / "m"), "--out", str(out), "--dry-run"]) == 0
    plan = yaml.safe_load(capsys.readouterr().out)
    m = rope_methods.get(method)
    assert plan["base_len"] == 8192 and plan["target"] == 65536
    assert plan["rope_parameters"]["after"] == m.extend(rope, base_len=8192, target_len=65536, **cfg.extend.rope)
    assert [(s["stage"], s["seq_len"]) for s in plan["plan"]] == [(s.name, s.seq_len) for s in m.plan(8192, 65536)]
    assert sum(s["steps"] for s in plan["plan"]) == cfg.steps
    assert not out.exists()


def test_grad_checkpointing_takes_a_bool_or_a_fraction_of_the_blocks():
    assert from_dict({"grad_checkpointing": True}).grad_checkpointing is True
    assert from_dict({"grad_checkpointing": "false"}).grad_checkpointing is False
    half = apply_overrides(RunConfig(), parse_set(["grad_checkpointing=0.5"]))
    assert half.grad_checkpointing == 0.5 and not isinstance(half.grad_checkpointing, bool)
    validate(half)


@pytest.mark.parametrize(
    "argv,want", [([], False), (["--grad-checkpointing"], True), (["--grad-checkpointing", "0.75"], 0.75)]
)
def test_grad_checkpointing_flag(argv, want):
    import argparse

    from longctx.train.cli_args import add_training_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_training_arguments(p)
    cfg = config_from_args(p.parse_args(["--out", "x"] + argv))
    assert cfg.grad_checkpointing == want and type(cfg.grad_checkpointing) is type(want)
    with pytest.raises(UsageError, match="grad_checkpointing"):
        config_from_args(p.parse_args(["--out", "x", "--grad-checkpointing", "2"]))
