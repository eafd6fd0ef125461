"""longctx's imports go one way: no cycle between its modules, nor between its packages
(an import inside a function counts: it still ties the two together)."""

import ast
from pathlib import Path

import longctx

ROOT = Path(longctx.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = ("longctx", *p.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _edges(mods) -> dict[str, set[str]]:
    edges = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            out |= {t for t in targets if t in mods and t != name}
        edges[name] = out
    return edges


def _cycle(graph) -> list[str] | None:
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def _collapse(edges, depth: int) -> dict[str, set[str]]:
    """Modules grouped by their first `depth` name parts; edges between a package and its own members dropped."""
    g = {}
    for a, bs in edges.items():
        for b in bs:
            ga, gb = ".".join(a.split(".")[:depth]), ".".join(b.split(".")[:depth])
            if ga != gb and not gb.startswith(ga + ".") and not ga.startswith(gb + "."):
                g.setdefault(ga, set()).add(gb)
    return g


def test_no_cycles():
    edges = _edges(_modules())
    for depth in (2, 3, 4):
        assert _cycle(_collapse(edges, depth)) is None


def test_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
