#!/usr/bin/env bash
# The shared-prefix prefill (longctx.model.prefix) on one GPU, without vLLM, as a lane (scripts/gpu/start-lane.sh)
# once our wheels are in /tmp/site: `bash scripts/gpu/plan.sh study 'bash scripts/gpu/share-lane.sh /tmp/w/share'`.
# Steps (scripts/gpu/steps.sh; ONLY and DRY as there):
#   pytest-shared   tests/test_generate_shared.py's GPU test (fla from forked states, SDPA aligned to the last key)
#   plain / shared  bench/eval_throughput.py on hybrid-1b, 16 RULER niah_single_1 prompts at 16k, CUDA-graph decode,
#                   ours without and with --share-prefixes (the same prompts: samples/s and token agreement)
set -u
out=${1:-/tmp/w/share}
limit=${STEP_LIMIT:-300}
tput="python3 bench/eval_throughput.py --config hybrid-1b --prompts ruler --samples 16 --max-new-tokens 32"
tput="$tput --cuda-graphs --impl ours --lengths 16384"
steps=(
  "pytest-shared|python3 -m pytest -m gpu -s -q tests/test_generate_shared.py"
  "plain|$tput --out $out/plain"
  "shared|$tput --share-prefixes --out $out/shared"
)
. "$(dirname "$0")/steps.sh"
run_steps "$out" "$limit" '^\||passed|failed|Error' "${steps[@]}"
