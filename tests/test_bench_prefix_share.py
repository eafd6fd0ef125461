"""bench/ruler_prefix_share.py: the share of prompt tokens a prefix tree would not compute again, by hand and on
RULER's own prompts (a needle task shares its haystack's start, a variable-tracking task almost nothing)."""

import importlib.util
import json
from pathlib import Path

from test_evaluate_e2e import _private_sample_cache, tiny_model  # noqa: F401 (fixtures)

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ruler_prefix_share.py"


def _bench():
    spec = importlib.util.spec_from_file_location("ruler_prefix_share", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shared_fraction_by_hand():
    share = _bench().shared_fraction
    assert share([[1, 2, 3], [1, 2, 4], [5]]) == 2 / 7  # sorted: [1,2,3], [1,2,4] share 2; [5] nothing
    assert share([[1, 2], [1, 2]]) == 2 / 4 and share([[7]]) == 0 and share([]) == 0
    assert share([[1, 2, 3, 4], [1, 2, 9], [1, 5]]) == (1 + 2) / 9  # [1,2,3,4]-[1,2,9]: 2; [1,2,9]-[1,5]: 1


def test_needles_share_their_haystack_and_vt_does_not(tiny_model, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "share.json"
    argv = ["--tokenizer", str(tiny_model), "--lengths", "1k", "--samples", "6", "--tasks", "niah_single_1,ruler_vt",
            "--json", str(out), "--min-saving", "256"]  # fmt: skip
    assert _bench().main(argv) == 0
    got = json.loads(out.read_text())
    share, plan = got["tree"], got["plan"]
    assert share["niah_single_1"]["1024"] > 0.2 and share["ruler_vt"]["1024"] < 0.05, share
    # the plan takes part of the tree (a few levels, nodes that save >= 256 tokens: 1k prompts), never more
    assert 0 <= plan["ruler_vt"]["1024"] <= share["ruler_vt"]["1024"]
    assert 0 < plan["niah_single_1"]["1024"] <= share["niah_single_1"]["1024"], got
    assert got["levels"]["niah_single_1"]["1024"] >= 2 and got["levels"]["ruler_vt"]["1024"] == 1
    assert "| niah_single_1 |" in capsys.readouterr().out
