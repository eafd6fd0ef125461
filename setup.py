"""Packaging metadata lives in pyproject.toml; this file only ships configs/ inside the package.

configs/ stays at the top of the repository (users read and pass its files as paths), so no
package contains it. A wheel gets a copy as `longctx/configs/`, where `longctx.shipped` finds it
with importlib.resources. An editable install needs no copy: its code runs from the checkout
and finds configs/ beside it.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildPyWithConfigs(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        if not CONFIGS.is_dir():
            raise SystemExit(f"error: {CONFIGS} is missing; a wheel without model configs cannot resolve --model names")
        for src in sorted(CONFIGS.rglob("*.yaml")):
            dst = Path(self.build_lib) / "longctx" / "configs" / src.relative_to(CONFIGS)
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithConfigs})
