#!/usr/bin/env bash
# vLLM 0.26.0 importable on a CPU machine, for bench/vllm_peer/load_check.py, tests/test_vllm_load.py and the
# vLLM API tests of tests/test_evaluate_vllm.py (vLLM's model classes, weight loaders, LLM signature and lm-eval's
# vllm model with the engine faked; no kernels run). Needs pip and PyPI (the vllm wheel comes from
# .vllm_whl/ when bench/vllm_peer/fetch-wheels.sh has filled it). Into DIR (default /tmp/vcpu):
#   bash bench/vllm_peer/cpu-site.sh [DIR]
#   PYTHONPATH=DIR python3 bench/vllm_peer/load_check.py MODEL_DIR ...
#   PYTHONPATH=DIR python3 -m pytest -q tests/test_vllm_load.py tests/test_evaluate_vllm.py
# Everything goes in with --no-deps (torch, transformers, pydantic and the rest are this machine's own); the
# list is what importing vllm.entrypoints.llm, lm-eval's vllm model and the Olmo Hybrid / Olmo 3 model modules
# needs (fastapi and starlette at the versions bench/vllm_peer/fetch-wheels.sh stages: newer fastapi imports
# opentelemetry).
set -euo pipefail
dir=${1:-/tmp/vcpu}
root=$(cd "$(dirname "$0")/../.." && pwd)
whl=$(ls "$root"/.vllm_whl/vllm-0.26.0-*.whl 2>/dev/null | head -1 || true)
if [ -z "$whl" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --dest "$tmp" vllm==0.26.0
  whl=$(ls "$tmp"/vllm-0.26.0-*.whl)
fi
python3 -m pip install -q --no-deps --no-compile --target "$dir" "$whl"
python3 -m pip install -q --no-deps --no-compile --target "$dir" pyzmq cbor2 openai-harmony openai einops \
  pybase64 cachetools msgspec uvloop prometheus-client llguidance xgrammar apache-tvm-ffi partial-json-parser \
  fastapi==0.136.3 starlette==1.10.0
PYTHONPATH="$dir" python3 -c "import vllm.model_executor.models.olmo_hybrid, vllm.model_executor.models.olmo3
import vllm.entrypoints.llm, lm_eval.models.vllm_causallms" 2>&1 | grep -v -E "WARNING|INFO|Triton" || true
echo "cpu-site: vllm importable with PYTHONPATH=$dir"
