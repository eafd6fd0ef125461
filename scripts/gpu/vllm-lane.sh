#!/usr/bin/env bash
# vLLM against longctx on one GPU, as a lane (scripts/gpu/start-lane.sh) once vLLM is installed in /tmp/vsite
# (bench/vllm_peer/install.sh) and our wheels in /tmp/site (scripts/gpu/stage-wheels.sh). Here, once:
#   bash scripts/gpu/stage-wheels.sh pack && bash bench/vllm_peer/fetch-wheels.sh   # 3 + 5 parts at a 24 MiB tree
# then the calls back to back (each within 30 s of the last; the machine keeps /tmp only while held):
#   carry [".whl_parts/p0"], [".whl_parts/p1"]:  bash scripts/gpu/stage-wheels.sh take
#   carry [".whl_parts/p2"]:  bash scripts/gpu/stage-wheels.sh take && bash scripts/gpu/stage-wheels.sh install
#   carry [".vllm_parts/00"] .. [".vllm_parts/03"]:  bash bench/vllm_peer/install.sh stash
#   carry [".vllm_parts/04"]:  bash bench/vllm_peer/install.sh stash && bash bench/vllm_peer/install.sh install
#        && export PYTHONPATH=/tmp/site:$PWD
#        && bash scripts/gpu/start-lane.sh "bash scripts/gpu/vllm-lane.sh /tmp/w/vllm" && bash scripts/gpu/poll.sh 420
#   then `bash scripts/gpu/poll.sh 560` calls at once (x.tgz: w/vllm/<step>/..., w/vllm/steps.txt).
#
# Steps, in order of what the issue asks first (each with its own time limit, its log and JSON under
# OUT_DIR/<step>/; one that fails does not stop the rest):
#   throughput-16k / -64k  bench/eval_throughput.py --impl ours,vllm (and the transformers peer at 16k, the same
#                          batch of 8) on hybrid-1b, RULER niah_single_1 prompts, same prompt ids, greedy:
#                          samples/s side by side
#   base                   study-20m's hybrid pretraining cut to 600 steps (a trained model: random weights tie too
#                          often for token agreement; it retrieves at 4k by then), extended briefly with YaRN and
#                          with DRoPE plus the folded temperature (c = 0.1), and the transformer the same way
#   smoke-<model>          bench/vllm_peer/smoke.py --against-longctx on each: greedy tokens of vLLM against ours
#   pytest-vllm            tests/test_vllm_gpu.py on the trained hybrid (the same check as a GPU test)
#   ruler-longctx / -vllm  `longctx eval --backend longctx|vllm` on the trained hybrid (niah_single_1..3 at 4k, the
#                          same 20 samples each), then `longctx answers --against`: equal within sampling noise?
# DRY=1 prints the commands. ONLY=step1,step2 runs those alone. STEP_LIMIT caps one step (default 540 s).
set -u
out=${1:-/tmp/w/vllm}
limit=${STEP_LIMIT:-540}
mkdir -p "$out"
export VLLM_USE_FLASHINFER_SAMPLER=0  # FlashInfer is not staged (bench/vllm_peer/fetch-wheels.sh)
vpy="env PYTHONPATH=/tmp/vsite:/tmp/site:$PWD python3"  # vLLM first: its folder has no tilelang (install.sh)
tput="python3 bench/eval_throughput.py --config hybrid-1b --prompts ruler --samples 8 --max-new-tokens 32"
tput="$tput --cuda-graphs --vllm-python /tmp/vsite-python"
m=$out/models
cfg=docs/study-20m/gate-layout  # the study-20m pretraining configs (RULER's layouts in the data): at 600 steps
                                # (39M tokens) the hybrid retrieves at 4k (docs/results.md, the learning curve)
steps=(
  "throughput-16k|$tput --lengths 16384 --impl ours,vllm,peer --peer-batch 8 --out $out/throughput-16k"
  "throughput-64k|$tput --lengths 65536 --impl ours,vllm --out $out/throughput-64k"
  "base|python3 -m longctx pretrain --config $cfg/pretrain-hybrid-s1.yaml --steps 600 --out $m/hybrid --no-progress"
  "yarn|python3 -m longctx extend --method yarn --target 16384 --model $m/hybrid --steps 10 --out $m/yarn --no-progress"
  "drope|python3 -m longctx extend --method drope --target 16384 --model $m/hybrid --steps 10 --set extend.rope.temperature=0.1 --out $m/drope --no-progress"
  "transformer|python3 -m longctx pretrain --config $cfg/pretrain-transformer-s1.yaml --steps 600 --out $m/transformer --no-progress"
)
for name in hybrid yarn drope transformer; do
  steps+=("smoke-$name|$vpy bench/vllm_peer/smoke.py $m/$name --against-longctx --max-tokens 32 --dtype bfloat16 --gpu-memory-utilization 0.4 --out $out/smoke-$name/smoke.json")
done
# the same as a GPU test (tests/test_vllm_gpu.py), on the trained hybrid
steps+=("pytest-vllm|env PYTHONPATH=/tmp/vsite:/tmp/site:$PWD LONGCTX_VLLM_MODEL=$m/hybrid python3 -m pytest -m gpu -s -q tests/test_vllm_gpu.py")
# RULER through both backends on the same samples, then sample by sample (longctx answers --against: a sign test)
ruler="--model $m/hybrid --lengths 4096 --tasks niah_single_1,niah_single_2,niah_single_3 --samples 20 --dtype bfloat16"
steps+=(
  "ruler-longctx|$vpy -m longctx eval $ruler --backend longctx --out $out/ruler-longctx/ruler.json"
  "ruler-vllm|$vpy -m longctx eval $ruler --backend vllm --out $out/ruler-vllm/ruler.json"
  "ruler-paired|python3 -m longctx answers $out/ruler-vllm/ruler.json --against $out/ruler-longctx/ruler.json"
)
if [ -z "${DRY:-}" ]; then  # eval_throughput runs vLLM's side through --vllm-python: a wrapper, /tmp/vsite first
  printf '#!/usr/bin/env bash\nPYTHONPATH=/tmp/vsite:/tmp/site:%s exec python3 "$@"\n' "$PWD" > /tmp/vsite-python
  chmod +x /tmp/vsite-python
fi
for step in "${steps[@]}"; do
  name=${step%%|*}
  cmd=${step#*|}
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  if [ -n "${DRY:-}" ]; then echo "$name|$cmd"; continue; fi
  mkdir -p "$out/$name"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  OUT="$out/$name" timeout -k 10 "$limit" $cmd > "$out/$name/log.txt" 2>&1
  rc=$?
  echo "$(date -u +%T) $name rc=$rc $(( $(date +%s) - t0 )) s" | tee -a "$out/steps.txt"
  grep -E '^\||first token|agree' "$out/$name/log.txt" | tail -8 >> "$out/steps.txt"
done
