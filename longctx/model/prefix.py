"""Which prompt tokens a batch can prefill once for several prompts: a prefix tree, cut to a few levels.

RULER's prompts of one task and length share long prefixes (the same haystack up to each needle:
about half the tokens of niah_single at 8k-16k, bench/ruler_prefix_share.py). `plan_shared_prefill`
builds the compressed prefix tree of a batch and says what to prefill in which order:

- each internal node is a token range [start, end) that all prompts below it share, prefilled once,
  in the cache row of its *owner* (the first prompt below it), continuing from its parent's state;
- before a level runs, every child whose owner differs from its parent's copies the parent owner's
  cache row (a fork), while that row still holds the state at the end of the parent's range;
- each prompt (leaf) then prefills the rest of its tokens, at least its last one, in its own row.

Every level is one packed prefill over few tokens, so a node is kept only where it saves at least
`min_saving` tokens ((prompts below it - 1) x its length), and at most `max_levels` levels are kept
(the node that saves least is merged into its children first): a chain of needles at random depths
keeps its best few cuts, which take most of what the whole chain would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Tokens a shared node must save to get a level of its own. A level is a forward through the whole model however
# few its tokens: on an H200 (hybrid-1b, 16k, 8 RULER prompts, docs/benchmarks.md) 7 levels cost about 0.5 s more
# than the tokens they computed, ~12k prompt tokens' time each (with host copies per layer, since made once per
# forward), and 3 of them saved under 4k tokens each; at 8,192 that batch gets 4 levels and keeps 52% of its
# prompt tokens shared instead of 55%.
MIN_SAVING = 8192
# `longctx eval --backend longctx` and the training probe share prefixes by default only once it is faster on a GPU
# across RULER's tasks: its GPU path (fla's varlen kernel from forked initial states, SDPA aligned to the last key)
# passed its bf16 test (tests/test_generate_shared.py); on an H200 at 16k it was 11% faster than a plain prefill on
# one niah_single_1 batch (docs/benchmarks.md, "How much RULER prefill ... saves"); `--share-prefixes` turns it on.
DEFAULT_ON = False
MAX_LEVELS = 16  # levels of shared prefixes at most (the prompts' own rest is one more)


@dataclass
class Node:
    start: int
    end: int
    owner: int  # the prompt whose cache row holds this node's state
    leaves: list[int]  # prompts below this node (owner first)
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None

    @property
    def saving(self) -> int:
        return (len(self.leaves) - 1) * (self.end - self.start)


@dataclass(frozen=True)
class Segment:
    row: int  # the prompt whose cache row this range is prefilled into
    start: int  # its first token's position (0: from an empty cache)
    end: int


@dataclass
class SharePlan:
    """levels[i]: (forks, segments) run in order: forks (src prompt row, dst prompt row) copied first,
    then one packed prefill of the segments; the last level holds every prompt's own segment."""

    levels: list[tuple[list[tuple[int, int]], list[Segment]]]
    computed: int  # tokens prefilled under the plan
    total: int  # tokens of all prompts

    @property
    def shared(self) -> float:
        return 1 - self.computed / self.total if self.total else 0.0


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    step = 256
    while i < n and a[i : i + step] == b[i : i + step]:  # list slices compare in C
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return min(i, n)


def _build(prompts: list[list[int]], order: list[int], lcp: list[int], lo: int, hi: int, start: int) -> list[Node]:
    """Nodes for sorted prompts order[lo:hi], which share tokens [0, start): one leaf each, or internal
    nodes for the runs that share more. lcp[i]: common prefix of order[i] and order[i+1], capped so that
    every prompt keeps its last token for itself."""
    nodes, i = [], lo
    while i < hi:
        j = i + 1
        while j < hi and lcp[j - 1] > start:  # the run that shares at least one more token
            j += 1
        members = order[i:j]
        if j - i == 1:
            p = order[i]
            nodes.append(Node(start, len(prompts[p]), p, [p]))
        else:
            leaves = sorted(members)
            node = Node(start, min(lcp[i : j - 1]), leaves[0], leaves)
            node.children = _build(prompts, order, lcp, i, j, node.end)
            for c in node.children:
                c.parent = node
            nodes.append(node)
        i = j
    return nodes


def _internal(nodes: list[Node]) -> list[Node]:
    out = []
    for n in nodes:
        if n.children:
            out.append(n)
            out.extend(_internal(n.children))
    return out


def _depth(nodes: list[Node]) -> int:
    return max((1 + _depth(n.children) for n in nodes if n.children), default=0)


def _dissolve(node: Node, roots: list[Node]) -> None:
    """Merge an internal node into its children: each child starts where the node started."""
    siblings = node.parent.children if node.parent is not None else roots
    k = siblings.index(node)
    for c in node.children:
        c.start, c.parent = node.start, node.parent
    siblings[k : k + 1] = node.children


def plan_shared_prefill(
    prompts: list[list[int]], min_saving: int | None = None, max_levels: int | None = None
) -> SharePlan:
    """The prefill plan of a batch (see the module doc); min_saving and max_levels default to MIN_SAVING
    and MAX_LEVELS. With nothing worth sharing it is one level of whole prompts, what a plain prefill does."""
    min_saving = MIN_SAVING if min_saving is None else min_saving
    max_levels = MAX_LEVELS if max_levels is None else max_levels
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("plan_shared_prefill needs at least one prompt and no empty prompt")
    if max_levels < 0 or min_saving < 1:
        raise ValueError(f"max_levels must be >= 0 and min_saving >= 1, got {max_levels} and {min_saving}")
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    lcp = [
        min(_common(prompts[a], prompts[b]), len(prompts[a]) - 1, len(prompts[b]) - 1)
        for a, b in zip(order, order[1:], strict=False)
    ]
    roots = _build(prompts, order, lcp, 0, len(order), 0)
    for node in _internal(roots):  # top-down: a merged node lengthens its children
        if node.saving < min_saving:
            _dissolve(node, roots)
    while _depth(roots) > max_levels:
        _dissolve(min(_internal(roots), key=lambda n: n.saving), roots)

    levels: list[tuple[list[tuple[int, int]], list[Segment]]] = []
    frontier, leaves = roots, []
    while frontier:
        forks = [(n.parent.owner, n.owner) for n in frontier if n.parent is not None and n.owner != n.parent.owner]
        inner = [n for n in frontier if n.children]
        leaves += [n for n in frontier if not n.children]
        if inner:
            levels.append((forks, [Segment(n.owner, n.start, n.end) for n in inner]))
        elif forks:
            levels.append((forks, []))
        frontier = [c for n in inner for c in n.children]
    last = [Segment(n.owner, n.start, n.end) for n in sorted(leaves, key=lambda n: n.owner)]
    if levels and not levels[-1][1]:  # the last forks go with the leaves' prefill
        levels[-1] = (levels[-1][0], last)
    else:
        levels.append(([], last))
    computed = sum(s.end - s.start for _, segs in levels for s in segs)
    return SharePlan(levels, computed, sum(len(p) for p in prompts))
