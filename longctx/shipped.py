"""Where configs/ is, whether longctx runs from a checkout or from an installed wheel.

The repository keeps configs/ at its top level. A wheel carries a copy inside the package as
`longctx/configs/` (setup.py puts it there at build time), found through importlib.resources; a
checkout (editable install, PYTHONPATH) has no such copy and uses the top-level folder beside the
package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path, PurePath

_CHECKOUT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def configs_dir() -> Path | None:
    """The configs/ folder shipped with this installation, or None when there is none."""
    shipped = resources.files("longctx") / "configs"
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    return _CHECKOUT_CONFIGS if _CHECKOUT_CONFIGS.is_dir() else None


def shipped_config(path: str | PurePath) -> Path | None:
    """`configs/extend/yarn-64k.yaml` (a path as the docs spell it) in the shipped configs/, when the
    path names no file from the current directory; None when it is not such a path or not shipped."""
    p = PurePath(path)
    if p.is_absolute() or len(p.parts) < 2 or p.parts[0] != "configs" or Path(p).exists():
        return None
    root = configs_dir()
    if root is None:
        return None
    found = root.joinpath(*p.parts[1:])
    return found if found.is_file() else None
