"""An installed wheel works on its own: model names, RULER data, tokenizer and corpus ship inside it.

The wheel is built from a copy of the source tree (`pip wheel --no-deps --no-build-isolation`, no
network), installed with `--no-deps` into a scratch `--target`, and its `longctx` script runs
`pretrain --model hybrid-tiny` from another directory with `python -S` and PYTHONPATH = the target
plus the dependencies' site-packages: no checkout on the path and no .pth file, so neither this
repository nor an editable install of it can fill in for what the wheel lacks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("longctx", "rope_methods", "eval_tasks")
# not part of a build: tests, benchmarks, docs, runs, build outputs, VCS and tool folders
SKIP_TOP = {"tests", "bench", "docs", "examples", "runs", "build", "dist"}


def _copy_source(dst: Path) -> Path:
    def ignore(folder, names):
        top = Path(folder).resolve() == REPO
        return [
            n
            for n in names
            if n == "__pycache__" or n.endswith((".egg-info", ".pyc")) or (top and (n in SKIP_TOP or n.startswith(".")))
        ]

    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


def _build_wheel(tmp_path: Path) -> Path:
    if importlib.util.find_spec("setuptools") is None:  # --no-build-isolation builds with what is installed
        pytest.skip("cannot build a wheel offline: setuptools is not installed")
    src = _copy_source(tmp_path / "src")
    out = tmp_path / "wheelhouse"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "-q",
        "-w",
        str(out),
        str(src),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        if re.search(r"No module named '(setuptools|wheel)'", r.stderr):  # an older setuptools needs wheel
            pytest.skip(f"cannot build a wheel offline here: {r.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip wheel failed:\n{r.stdout}\n{r.stderr}")
    (wheel,) = out.glob("longctx-*.whl")
    return wheel


def _expected_files() -> set[str]:
    """Every file of the three packages (code and data), and configs/ under longctx/configs/."""
    files = set()
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc"):
                files.add(p.relative_to(REPO).as_posix())
    files |= {
        "longctx/configs/" + p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*.yaml")
    }
    return files


def test_wheel_installs_and_pretrains_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_expected_files() - shipped)
    assert not missing, f"not in the wheel: {missing[:10]}"
    assert {
        "longctx/configs/models/hybrid-tiny.yaml",
        "eval_tasks/ruler/niah_single_1.yaml",
        "eval_tasks/ruler/data/english_words.txt.gz",
        "longctx/data/tokenizer.json",
        "rope_methods/yarn.py",
    } <= shipped
    (entry_points,) = [n for n in shipped if n.endswith(".dist-info/entry_points.txt")]
    plugins = zipfile.ZipFile(wheel).read(entry_points).decode()  # vLLM runs these in each of its processes
    assert "[vllm.general_plugins]\nolmo_hybrid_conv = longctx.evaluate.vllm_compat:register" in plugins

    target = tmp_path / "target"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr

    work = tmp_path / "elsewhere"
    work.mkdir()
    deps = [p for p in dict.fromkeys([*site.getsitepackages(), site.getusersitepackages()]) if os.path.isdir(p)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *deps])
    python = [sys.executable, "-S"]  # no site: .pth files (an editable longctx) stay out

    where = subprocess.run(
        python
        + [
            "-c",
            "import json, longctx, rope_methods, eval_tasks; print(json.dumps("
            "[m.__file__ for m in (longctx, rope_methods, eval_tasks)]))",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    for module_file in json.loads(where.stdout):
        assert Path(module_file).resolve().is_relative_to(target.resolve()), module_file

    script = target / "bin" / "longctx"
    assert script.is_file()
    run = subprocess.run(
        python
        + [
            str(script),
            "pretrain",
            "--model",
            "hybrid-tiny",
            "--seq-len",
            "32",
            "--batch-size",
            "1",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            "base",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    model_dir = work / "base"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "olmo_hybrid"

    # the study runner ships too, with the study files it reads as the docs spell them
    study = subprocess.run(
        python + [str(script), "study", "configs/experiments/study-tiny.yaml", "--dry-run", "--only", "pretrain"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert study.returncode == 0, study.stderr
    assert "# pretrain-hybrid: new" in study.stdout


def test_config_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    """From outside the checkout: model names, and configs/... paths as the docs spell them."""
    from longctx.config import load_run_config
    from longctx.errors import UsageError
    from longctx.model.config import available_configs, load_config

    monkeypatch.chdir(tmp_path)
    assert {"hybrid-tiny", "transformer-7b"} <= set(available_configs())
    assert load_config("hybrid-tiny").model_type == "olmo_hybrid"
    assert load_config("configs/models/transformer-tiny.yaml").model_type == "olmo3"
    assert load_run_config("configs/extend/yarn-64k.yaml").extend.method == "yarn"
    mine = tmp_path / "configs" / "extend" / "yarn-64k.yaml"  # a file there in the current directory wins
    mine.parent.mkdir(parents=True)
    mine.write_text("extend: {method: pi}\n")
    assert load_run_config("configs/extend/yarn-64k.yaml").extend.method == "pi"
    with pytest.raises(UsageError, match="no such file"):
        load_run_config("configs/extend/nope.yaml")
