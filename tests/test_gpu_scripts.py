"""scripts/gpu/kcache.sh, on CPU: the shipped fla autotune results (scripts/gpu/h200-autotune.tgz) are what a
lane on a fresh GPU machine starts with when nothing is carried, and a packed cache restores as it was."""

import json
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu" / "kcache.sh"


def _kcache(*args, cache):
    env = {"PATH": "/usr/bin:/bin", "LONGCTX_KERNEL_CACHE": str(cache)}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=60)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_restore_without_a_carried_cache_unpacks_the_shipped_autotune_results(tmp_path):
    empty, cache = tmp_path / "tcache", tmp_path / "kcache"
    empty.mkdir()
    run = _kcache("restore", empty, cache=cache)
    assert run.returncode == 0 and "from h200-autotune.tgz" in run.stdout, run.stderr
    files = _files(cache)
    assert len(files) >= 20
    for name, data in files.items():
        parts = Path(name).parts  # triton/<key>/<kernel>.autotune.json, fla's own layout in Triton's cache
        assert parts[0] == "triton" and len(parts) == 3 and name.endswith(".autotune.json"), name
        json.loads(data)


def test_pack_then_restore_gives_the_cache_back(tmp_path):
    cache, out, again = tmp_path / "kcache", tmp_path / "out", tmp_path / "again"
    (cache / "triton" / "K1").mkdir(parents=True)
    (cache / "triton" / "K1" / "chunk_fwd.autotune.json").write_text('{"configs": [1]}')
    (cache / "inductor").mkdir()
    (cache / "inductor" / "compiled.py").write_text("x = 1\n")
    out.mkdir()
    assert _kcache("pack", out, cache=cache).returncode == 0
    assert [p.name for p in out.iterdir()] == ["kcache.tgz.part0"]
    run = _kcache("restore", out, cache=again)
    assert run.returncode == 0 and "from kcache.tgz.part*" in run.stdout, run.stderr
    assert _files(again) == _files(cache)
