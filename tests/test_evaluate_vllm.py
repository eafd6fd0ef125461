"""`--backend vllm` wiring, with lm-eval's model registry mocked (vLLM itself runs only on a GPU machine)."""

import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path

import pytest

from longctx.evaluate import runner
from longctx.evaluate.runner import CONTEXT_MARGIN, EvalSpec


class FakeVLLM:
    made = []

    @classmethod
    def create_from_arg_obj(cls, args, extra):
        cls.made.append((dict(args), dict(extra), os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN")))
        return cls()


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    import lm_eval.api.registry as reg

    # the model folder (tmp_path) of these tests: default RoPE whose table holds every length asked for
    cfg = {"model_type": "olmo_hybrid", "max_position_embeddings": 1 << 20, "rope_parameters": {"rope_theta": 1e4}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))

    FakeVLLM.made = []
    names = []
    monkeypatch.setattr(reg, "get_model", lambda name: names.append(name) or FakeVLLM)
    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    monkeypatch.delenv("VLLM_USE_FLASHINFER_SAMPLER", raising=False)
    return names


def test_build_lm_vllm_args_and_long_len(tmp_path, fake_registry):
    # a model trained at 4k with default RoPE: vLLM's RoPE table (max_position_embeddings positions) is lengthened
    cfg = {"model_type": "olmo_hybrid", "max_position_embeddings": 4096,
           "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = EvalSpec(model=str(tmp_path), lengths=[4096, 65536], tasks=["niah_single_1"], samples=1,
                    out=tmp_path / "r.json", backend="vllm", dtype="bfloat16")  # fmt: skip
    runner.build_lm(spec)
    assert fake_registry == ["vllm"]
    (args, extra, allow) = FakeVLLM.made[0]
    # lm-eval's VLLM asserts that only one of max_length / max_model_len is given
    assert args == {"pretrained": str(tmp_path.resolve()), "dtype": "bfloat16", "max_model_len": 65536 + CONTEXT_MARGIN,
                    "hf_overrides": {"max_position_embeddings": 65536 + CONTEXT_MARGIN}}  # fmt: skip
    assert extra == {"batch_size": "auto"}
    # the cap is above max_position_embeddings of a model trained to exactly 64k: vLLM refuses that unless allowed
    assert allow == "1"
    # without FlashInfer (bench/vllm_peer leaves it out) vLLM's CUDA sampler must not try to import it
    if importlib.util.find_spec("flashinfer") is None:
        assert os.environ.get("VLLM_USE_FLASHINFER_SAMPLER") == "0"


def test_build_lm_vllm_share_prefixes_turns_on_its_prefix_cache(tmp_path, fake_registry):
    """--share-prefixes with --backend vllm: vLLM's prefix caching (vLLM 0.26 leaves it off for hybrid models);
    without it vLLM's own default stands (the argument is not passed)."""
    for share in (True, False):
        spec = EvalSpec(model=str(tmp_path), lengths=[4096], tasks=["niah_single_1"], samples=1,
                        out=tmp_path / "r.json", backend="vllm", share_prefixes=share)  # fmt: skip
        runner.build_lm(spec)
    (on, _, _), (off, _, _) = FakeVLLM.made
    assert on["enable_prefix_caching"] is True and "enable_prefix_caching" not in off


def test_share_prefixes_refused_for_hf(tmp_path, capsys):
    from longctx.cli import main

    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text("{}")
    (m / "tokenizer.json").write_text("{}")
    (m / "model.safetensors").write_bytes(b"")
    out = tmp_path / "r.json"
    code = main(
        ["eval", "--model", str(m), "--backend", "hf", "--share-prefixes", "--lengths", "4096", "--out", str(out)]
    )
    assert code == 2 and not out.exists()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--share-prefixes" in line and "vllm" in line


def test_build_lm_vllm_fixes_the_conv_loader_before_the_engine(tmp_path, fake_registry, monkeypatch):
    """The vLLM it builds loads Olmo Hybrid's conv weights: longctx/evaluate/vllm_compat.register() has wrapped
    vLLM's loader factory before lm-eval's vllm model is made (here a stand-in module holds the factory)."""
    import types

    from longctx.evaluate import vllm_compat

    gdn = types.ModuleType(vllm_compat.GDN_MODULE)
    setattr(gdn, vllm_compat.FACTORY, lambda dims, tp_size, tp_rank: None)
    monkeypatch.setitem(sys.modules, vllm_compat.GDN_MODULE, gdn)
    wrapped_when_made = []
    monkeypatch.setattr(
        FakeVLLM,
        "create_from_arg_obj",
        classmethod(lambda cls, a, e: wrapped_when_made.append(getattr(gdn, vllm_compat.FACTORY).longctx_wrapped)),
    )
    spec = EvalSpec(model=str(tmp_path), lengths=[4096], tasks=["niah_single_1"], samples=1,
                    out=tmp_path / "r.json", backend="vllm")  # fmt: skip
    runner.build_lm(spec)
    assert wrapped_when_made == [True]


def test_build_lm_vllm_keeps_a_users_setting(tmp_path, fake_registry, monkeypatch):
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "0")
    spec = EvalSpec(model=str(tmp_path), lengths=[4096], tasks=["niah_single_1"], samples=1,
                    out=tmp_path / "r.json", backend="vllm", batch_size=8)  # fmt: skip
    runner.build_lm(spec)
    (_, extra, allow) = FakeVLLM.made[0]
    assert extra == {"batch_size": 8} and allow == "0"


def _smoke():
    path = Path(__file__).resolve().parents[1] / "bench" / "vllm_peer" / "smoke.py"
    spec = importlib.util.spec_from_file_location("vllm_smoke", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_args(tmp_path, capsys):
    smoke = _smoke()
    with pytest.raises(SystemExit):
        smoke.parse_args([str(tmp_path)])  # no config.json
    assert "config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    kw = smoke.llm_kwargs(smoke.parse_args([str(tmp_path), "--enforce-eager"]))
    assert kw["enforce_eager"] is True and kw["model"] == str(tmp_path.resolve())


def test_smoke_and_lm_eval_kwargs_fit_vllms_signature(tmp_path):
    """Where vLLM is importable (a GPU machine, or its wheel unpacked on sys.path): every LLM(...) keyword
    that the smoke script and lm-eval's vllm model pass is an LLM parameter or an EngineArgs field."""
    pytest.importorskip("vllm.entrypoints.llm", reason="vLLM is not installed here")
    import dataclasses

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    accepted = set(inspect.signature(LLM.__init__).parameters) | {f.name for f in dataclasses.fields(EngineArgs)}
    (tmp_path / "config.json").write_text("{}")
    smoke = _smoke()
    assert set(smoke.llm_kwargs(smoke.parse_args([str(tmp_path)]))) <= accepted
    spec = importlib.util.spec_from_file_location("vllm_throughput", Path(smoke.__file__).with_name("throughput.py"))
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    args = throughput.parse_args([str(tmp_path), "--prompts", "p.json", "--out", "o.json"])
    assert set(throughput.llm_kwargs(args, 4096)) <= accepted
    args = throughput.parse_args([str(tmp_path), "--prompts", "p.json", "--out", "o.json", "--max-num-batched-tokens",
                                  "65536"])  # fmt: skip
    assert set(throughput.llm_kwargs(args, 4096)) <= accepted
    # where the engine's resolved settings are read (throughput.engine_settings), in vLLM's own classes
    from vllm.config import CompilationConfig, SchedulerConfig
    from vllm.v1.engine.llm_engine import LLMEngine

    assert "self.vllm_config = vllm_config" in inspect.getsource(LLMEngine.__init__)
    fields = {f.name for f in dataclasses.fields(SchedulerConfig)}
    assert {"max_num_batched_tokens", "max_num_seqs", "enable_chunked_prefill"} <= fields
    assert {"mode", "cudagraph_mode"} <= {f.name for f in dataclasses.fields(CompilationConfig)}
    src = inspect.getsource(sys.modules["lm_eval.models.vllm_causallms"] if "lm_eval.models.vllm_causallms"
                            in sys.modules else importlib.import_module("lm_eval.models.vllm_causallms"))  # fmt: skip
    for key in ("max_model_len", "max_num_seqs", "enable_lora", "max_lora_rank", "tokenizer_revision", "seed"):
        assert f'"{key}"' in src and key in accepted, key


def test_lm_evals_vllm_model_on_vllms_api(tmp_path, monkeypatch):
    """Where vLLM is importable: lm-eval's `vllm` model, with vllm.LLM faked, builds its tokenizer and chat
    template through vLLM's own helpers and turns a RULER request (greedy, until [], max_gen_toks) into
    real vllm.SamplingParams and TokensPrompts; the engine arguments it passes are the runner's."""
    pytest.importorskip("vllm.entrypoints.llm", reason="vLLM is not installed here")
    import json
    import types

    import lm_eval.models.vllm_causallms as V
    from lm_eval.api.instance import Instance
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from vllm import SamplingParams

    vocab = {w: i for i, w in enumerate(["<eos>", "the", "key", "is", "42", "Answer", ":"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "olmo_hybrid", "eos_token_id": 0}))
    seen = {}

    class FakeLLM:
        def __init__(self, **kw):
            seen["engine"] = kw
            hf_config = types.SimpleNamespace(model_type="olmo_hybrid")
            cfg = types.SimpleNamespace(trust_remote_code=False, hf_config=hf_config, max_model_len=kw["max_model_len"])
            self.llm_engine = types.SimpleNamespace(model_config=cfg)

        def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
            seen["prompts"], seen["params"] = prompts, sampling_params
            out = types.SimpleNamespace(text=" 42", token_ids=[4])
            return [types.SimpleNamespace(outputs=[out]) for _ in prompts]

    monkeypatch.setattr(V, "LLM", FakeLLM)
    rope = {"max_position_embeddings": 1280}  # what runner.build_lm adds for a RoPE table too short (vllm_rope)
    lm = V.VLLM.create_from_arg_obj({"pretrained": str(tmp_path), "dtype": "auto", "max_model_len": 1280,
                                     "hf_overrides": rope}, {"batch_size": "auto"})  # fmt: skip
    assert seen["engine"]["max_model_len"] == 1280 and seen["engine"]["model"] == str(tmp_path)
    assert seen["engine"]["hf_overrides"] == rope  # lm-eval hands it to vllm.LLM
    req = Instance("generate_until", {}, ("the key is Answer :", {"until": [], "max_gen_toks": 8, "do_sample": False,
                                                                  "temperature": 0.0}), 0)  # fmt: skip
    assert lm.generate_until([req]) == [" 42"]
    (p,), (sp,) = seen["prompts"], seen["params"]
    assert p["prompt_token_ids"] == [1, 2, 3, 5, 6]
    assert isinstance(sp, SamplingParams) and sp.temperature == 0.0 and sp.max_tokens == 8


def test_lm_eval_passthrough_stops_the_vllm_engines_it_leaves(monkeypatch, capsys):
    """`longctx lm-eval --model vllm`: lm-eval builds and drops the model inside its run; every vllm.LLM still in
    the process has its engine stopped when the command returns (however it returns), and nothing is looked for
    where vLLM was never imported."""
    import types

    from longctx.cli import main as cli_main
    from longctx.evaluate import vllm_engine

    stopped = []

    class LLM:  # stands in for vllm.LLM
        def __init__(self, core=True):
            shutdown = types.SimpleNamespace(shutdown=lambda: stopped.append(self))
            self.llm_engine = types.SimpleNamespace(engine_core=shutdown if core else None)

    monkeypatch.delitem(sys.modules, "vllm.entrypoints.llm", raising=False)
    kept = [LLM(), LLM()]
    assert vllm_engine.stop_all() == 0 and stopped == []  # vLLM not imported: nothing of it to stop
    monkeypatch.setitem(sys.modules, "vllm.entrypoints.llm", types.SimpleNamespace(LLM=LLM))
    kept.append(LLM(core=False))  # an engine already gone
    assert vllm_engine.stop_all() == 2 and sorted(map(id, stopped)) == sorted(map(id, kept[:2]))
    stopped.clear()
    assert cli_main(["lm-eval", "--help"]) == 0  # lm-eval exits through SystemExit: the engines still stop
    capsys.readouterr()
    assert sorted(map(id, stopped)) == sorted(map(id, kept[:2]))


def test_the_engine_stop_is_on_vllms_api():
    """Where vLLM is importable: vllm_engine.stop_vllm_engine's path, lm-eval's `model` -> vllm.LLM's `llm_engine` ->
    LLMEngine's `engine_core` -> the client's `shutdown`, is vLLM's and lm-eval's own."""
    pytest.importorskip("vllm.entrypoints.llm", reason="vLLM is not installed here")
    import lm_eval.models.vllm_causallms as V
    from vllm import LLM
    from vllm.v1.engine.core_client import EngineCoreClient, SyncMPClient
    from vllm.v1.engine.llm_engine import LLMEngine

    assert "self.model = LLM(" in inspect.getsource(V.VLLM.__init__)
    assert "self.llm_engine = " in inspect.getsource(LLM.__init__)
    assert "self.engine_core = EngineCoreClient.make_client(" in inspect.getsource(LLMEngine.__init__)
    for cls in (EngineCoreClient, SyncMPClient):
        assert list(inspect.signature(cls.shutdown).parameters)[:1] == ["self"]


def test_smoke_agreement_counts():
    """smoke.py --against-longctx: first-token and whole-continuation agreement, and where each pair differs."""
    agree = _smoke().agreement([[1, 2, 3], [4, 5, 6], [7, 8], [9]], [[1, 2, 3], [4, 0, 6], [0, 8], [9, 1]])
    assert agree == {"prompts": 4, "first_token_equal": 3, "all_tokens_equal": 1, "first_difference": [None, 1, 0, 1]}
    with pytest.raises(ValueError):
        _smoke().agreement([[1]], [])


def test_vllm_throughput_prompts_file(tmp_path):
    """bench/vllm_peer/throughput.py reads {T: [[ids], ...]} shortest length first and refuses empty prompts."""
    path = Path(__file__).resolve().parents[1] / "bench" / "vllm_peer" / "throughput.py"
    spec = importlib.util.spec_from_file_location("vllm_throughput", path)
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"65536": [[1, 2]], "16384": [[3], [4, 5]]}))
    assert throughput.load_prompts(str(f)) == {16384: [[3], [4, 5]], 65536: [[1, 2]]}
    for bad in ({"16384": []}, {"16384": [[]]}, {"16384": [["a"]]}):
        f.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="16384"):
            throughput.load_prompts(str(f))
