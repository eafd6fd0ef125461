"""`longctx eval` validates every flag first (exit 2, one line, nothing written); `longctx lm-eval` passes through."""

import argparse
import importlib.util
import json

import pytest

from longctx.cli import main


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "olmo_hybrid", "rope_parameters": None}))
    (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 4096}))
    (d / "model.safetensors").write_bytes(b"")  # validation only looks for the files
    return d


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.mark.parametrize("extra, words", [
    (["--lengths", "4k,4q"], ["'4q'", "4k"]),
    (["--lengths", ""], ["no lengths"]),
    (["--tasks", "niah_single_1,niah_bogus"], ["'niah_bogus'", "niah_single_1", "ruler_vt"]),
    (["--samples", "0"], ["--samples 0"]),
    (["--batch-size", "big"], ["--batch-size 'big'", "auto"]),
    (["--out", "OUT/ruler.txt"], [".json"]),
    (["--chat-template"], ["chat template"]),
    (["--backend", "vllm"], ["vllm"]),
    (["--device", "tpu"], ["'tpu'", "cuda"]),
    (["--haystack-dir", "OUT/none"], ["--haystack-dir", "does not exist"]),
])  # fmt: skip
def test_bad_flags_exit_2_one_line_nothing_written(tmp_path, model_dir, capsys, extra, words):
    out = tmp_path / "OUT" / "ruler.json"
    argv = ["eval", "--model", str(model_dir), "--lengths", "4k", "--out", str(out), *extra]
    argv = [str(tmp_path / a) if a.startswith("OUT/") else a for a in argv]
    before = _files(tmp_path)
    if extra[:2] == ["--backend", "vllm"] and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here, so --backend vllm is valid")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longctx eval: error:"), err
    for w in words:
        assert w in err[0]
    assert _files(tmp_path) == before


def test_model_dir_problems(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(tmp_path / "absent"), "--lengths", "4k", "--out", str(out)]) == 2
    assert "absent" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--model", str(tmp_path / "empty"), "--lengths", "4k", "--out", str(out)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "empty"), "--lengths", "4k", "--out", str(tmp_path)]) == 2
    (tmp_path / "empty" / "config.json").write_text("{}")
    assert main(["eval", "--model", str(tmp_path / "empty"), "--lengths", "4k", "--out", str(out)]) == 2
    assert "no tokenizer" in capsys.readouterr().err
    (tmp_path / "empty" / "tokenizer.json").write_text("{}")
    assert main(["eval", "--model", str(tmp_path / "empty"), "--lengths", "4k", "--out", str(out)]) == 2
    assert "no weights" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_backend_is_argparse_error(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "eval",
                "--model",
                str(model_dir),
                "--lengths",
                "4k",
                "--out",
                str(tmp_path / "r.json"),
                "--backend",
                "onnx",
            ]
        )
    assert e.value.code == 2 and "onnx" in capsys.readouterr().err


def test_foreign_journal_refused_before_loading(model_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    journal = tmp_path / "r.json.partial.jsonl"
    journal.write_text(json.dumps({"kind": "header", "fingerprint": {"model": "/elsewhere"}}) + "\n")
    assert main(["eval", "--model", str(model_dir), "--lengths", "4k", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another run" in err[0]
    assert not out.exists()


def test_task_names():
    from longctx.evaluate.eval_cmd import parse_tasks
    from longctx.results import RULER_TASKS

    assert parse_tasks("all") == list(RULER_TASKS)
    assert parse_tasks("vt,niah_single_2,ruler_vt") == ["ruler_vt", "niah_single_2"]


def test_lm_eval_passes_every_argument_through():
    from longctx.evaluate import lm_eval_cmd

    p = argparse.ArgumentParser()
    lm_eval_cmd.add_arguments(p)
    argv = ["--model", "longctx", "--model_args", "pretrained=x", "--tasks", "ruler", "-h"]
    assert p.parse_args(argv).lm_eval_args == argv
    assert p.parse_args([]).lm_eval_args == []


def test_lm_eval_help_is_lm_evals(capsys):
    assert main(["lm-eval", "run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--include_path" in out and "--model_args" in out
