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
#        && bash scripts/gpu/start-lane.sh "bash scripts/gpu/vllm-lane.sh /tmp/w/vllm" && bash scripts/gpu/poll.sh 240
#   then `bash scripts/gpu/poll.sh 200` calls at once (x.tgz: w/vllm/<step>/..., w/vllm/steps.txt; a machine
#   taken back mid-call returns nothing of that call, so short polls lose less). `bash scripts/gpu/plan.sh vllm`
#   prints these calls, checked against what is staged.
#
# Steps, in order (scripts/gpu/steps.sh: each with its own time limit, its logs and JSON under OUT_DIR/<step>/; one
# that fails does not stop the rest; the parts of a step joined by ' & ' run side by side, log0.txt, log1.txt, ...):
#   models                 study-20m's hybrid and transformer pretraining cut to 1200 and 300 steps, side by side (trained
#                          models: random weights tie too often for token agreement); first: RULER through both
#                          backends needs them, and the speed has been measured (docs/benchmarks.md, "Against vLLM")
#   ruler-longctx / -vllm / -paired   RULER on the trained hybrid (niah_single_1..3 at 4k, 50 samples each) through
#                          `--backend longctx` and `--backend vllm`, each alone on the GPU, then `longctx answers
#                          --against`: equal within sampling noise? and each cell's seconds through both;
#                          ruler-time: `longctx compare --time`, seconds and samples/s per backend
#   pytest-vllm            tests/test_vllm_gpu.py on the trained hybrid (the same check as a GPU test)
#   extend                 the hybrid extended briefly with YaRN and with DRoPE plus the folded temperature (c = 0.1)
#   smoke-<model>          bench/vllm_peer/smoke.py --against-longctx (eager): greedy tokens of vLLM against ours, each
#                          alone on the GPU (vLLM's start-up memory profile fails when another process frees memory);
#                          the transformer, YaRN and DRoPE, then the hybrid again (32/32 tokens on 3 prompts before)
#   ruler-longctx-b1 / ruler-b1-paired   the same RULER cells one prompt per call, paired with the batched run
#   throughput-16k / -64k  bench/eval_throughput.py --impl ours,vllm on hybrid-1b, RULER niah_single_1 prompts, the
#                          same prompt ids, greedy: samples/s side by side, vLLM as users run it (CUDA graphs, compile);
#                          vLLM's own output in OUT/vllm_log.txt, ours profiled at 16k (--profile:
#                          OUT/profile_eval_ours_<T>.txt). vLLM captures CUDA graphs for batches up to 16
#                          (--vllm-max-capture 16; its default, 512, took its compiled start past 330 s on an H200): the
#                          timed batches of 8 replay the size-8 graph either way, and prefill chunks are above any
#                          capture size
#   throughput-16k-eager   only if vLLM did not run in throughput-16k: vLLM alone again, eager (64k and 16k-share
#                          follow suit; the rows say engine.enforce_eager)
#   throughput-4k          the same at 4k with 48 prompts in one call (RULER's shortest length, a cell's batch)
#   throughput-16k-share   the same at 16k with ours sharing prefixes (--share-prefixes) and vLLM's prefix cache on
#   throughput-16k-peer    ours against transformers + fla at equal batches (--peer-batch 8: one left-padded call)
#   pytest-shared          tests/test_generate_shared.py's GPU test: prefill with shared prefixes (fla from forked
#                          states; bf16 against fp32, and the host waits per level); the CUDA-graph decode test with
#                          a kept graph replayed on the next call (ours runs --keep-graph in the throughput steps)
#   pytest-gpu             scripts/gpu/test-gpu.sh: `pytest -m gpu` whole, 4 shards side by side, then the gpu_alone
#                          tests (vLLM's) by themselves, within the step's limit (OUT/gpu-tests.txt: each shard's
#                          summary and slowest tests)
#   throughput-64k-chunk64k  vLLM alone at 64k with a whole prompt per engine step (its default chunk is 16,384;
#                          the JSON rows carry the settings its engine resolved)
# DRY=1 prints the commands (a step of parts as name.0, name.1, ...). ONLY=step1,step2 runs those alone.
# STEP_LIMIT caps one step (default 540 s). HYBRID_STEPS (default 1200) cuts the hybrid's pretraining further where
# only token agreement is asked (pytest-vllm, pytest-gpu, smoke-*: the transformer agreed 32/32 at 300); the RULER
# steps need the 1200 to retrieve.
set -u
out=${1:-/tmp/w/vllm}
limit=${STEP_LIMIT:-540}
export VLLM_USE_FLASHINFER_SAMPLER=0  # FlashInfer is not staged (bench/vllm_peer/fetch-wheels.sh)
vpath=/tmp/vsite:/tmp/site:$PWD  # vLLM first: its folder has no tilelang (install.sh)
vpy="env PYTHONPATH=$vpath python3"
base="python3 bench/eval_throughput.py --config hybrid-1b --prompts ruler --samples 8 --max-new-tokens 32"
tput=$base
# --budget-s under the step's limit: eval_throughput stops a vLLM still starting itself and keeps the row and
# vLLM's output so far (OUT/vllm_log.txt)
tput="$tput --cuda-graphs --keep-graph --vllm-python /tmp/vsite-python --budget-s $((limit - 20)) --vllm-max-capture 16"
tput4k=${tput/--samples 8/--samples 48}
tput4k=${tput4k/--vllm-max-capture 16/--vllm-max-capture 64}
cap="bash scripts/gpu/vllm-capture.sh"
m=$out/models
cfg=docs/study-20m/gate-layout  # the study-20m pretraining configs (RULER's layouts in the data), cut short. The
                                # hybrid to 1200 steps (78.6M tokens): two hybrids cut to 600 (39.3M) scored 0 at 4k
                                # on an H100, where the full 1800 score 96 (docs/study-20m); RULER through both
                                # backends compares answers that retrieve. The transformer serves vLLM's token
                                # agreement alone (smoke-transformer): 300 steps
pre="python3 -m longctx pretrain --no-progress --config $cfg"
ext="python3 -m longctx extend --target 16384 --model $m/hybrid --steps 10 --no-progress"
smoke() {  # vLLM (eager: the agreement is the question here, not its speed) against ours on model $1
  echo "$vpy bench/vllm_peer/smoke.py $m/$1 --against-longctx --enforce-eager --max-tokens 32 --dtype bfloat16" \
    "--gpu-memory-utilization 0.35 --out $out/smoke-$1/smoke.json"
}
# RULER through both backends on the same samples, then sample by sample (longctx answers --against: a sign test)
ruler="--model $m/hybrid --lengths 4096 --tasks niah_single_1,niah_single_2,niah_single_3 --samples 50 --dtype bfloat16"
steps=(
  "models|$pre/pretrain-hybrid-s1.yaml --steps ${HYBRID_STEPS:-1200} --out $m/hybrid & $pre/pretrain-transformer-s1.yaml --steps 300 --out $m/transformer"
  "ruler-longctx|$vpy -m longctx eval $ruler --backend longctx --out $out/ruler-longctx/ruler.json"
  "ruler-vllm|$vpy -m longctx eval $ruler --backend vllm --out $out/ruler-vllm/ruler.json"
  "ruler-paired|python3 -m longctx answers $out/ruler-vllm/ruler.json --against $out/ruler-longctx/ruler.json"
  "ruler-time|python3 -m longctx compare $out/ruler-longctx/ruler.json $out/ruler-vllm/ruler.json --time --no-group"
  # the same as a GPU test (tests/test_vllm_gpu.py), on the trained hybrid
  "pytest-vllm|env PYTHONPATH=$vpath LONGCTX_VLLM_MODEL=$m/hybrid python3 -m pytest -m gpu -s -q tests/test_vllm_gpu.py"
  "smoke-transformer|$(smoke transformer)"
  "extend|$ext --method yarn --out $m/yarn & $ext --method drope --set extend.rope.temperature=0.1 --out $m/drope"
  "smoke-yarn|$(smoke yarn)"
  "smoke-drope|$(smoke drope)"
  "smoke-hybrid|$(smoke hybrid)"
  "ruler-longctx-b1|$vpy -m longctx eval $ruler --backend longctx --batch-size 1 --out $out/ruler-longctx-b1/ruler.json"
  "ruler-b1-paired|python3 -m longctx answers $out/ruler-longctx-b1/ruler.json --against $out/ruler-longctx/ruler.json"
  "throughput-16k|$tput --lengths 16384 --impl ours,vllm --profile --out $out/throughput-16k"
  # vLLM again, eager, if its compiled start outlived the step (vllm-capture.sh); the later vLLM steps follow suit
  "throughput-16k-eager|$cap retry $out/throughput-16k $tput --lengths 16384 --impl vllm --out $out/throughput-16k-eager"
  "throughput-64k|$cap adapt $out/throughput-16k $tput --lengths 65536 --impl ours,vllm --out $out/throughput-64k"
  # RULER's shortest length with a cell's worth of prompts in one call: many short sequences, where decode and
  # per-step overheads weigh most (the trained 20M hybrid's 4k cells: vLLM 1.4 s against ours 3.1 s for 50)
  # (vLLM's graphs captured up to 64 here, so its decode of 48 replays one)
  "throughput-4k|$cap adapt $out/throughput-16k ${tput4k} --lengths 4096 --impl ours,vllm --out $out/throughput-4k"
  # both with what shares prefixes: ours prefilling them once, vLLM's prefix cache (off by default for hybrids)
  "throughput-16k-share|$cap adapt $out/throughput-16k $tput --lengths 16384 --impl ours,vllm --share-prefixes --vllm-prefix-caching --profile --out $out/throughput-16k-share"
  # transformers (+ fla) with the same 8 prompts in one generate call, left-padded (lm_eval --model hf,batch_size=8):
  # ours against the peer at equal batches (the table's 8.01x set one prompt a call against ours' batch)
  "throughput-16k-peer|$base --cuda-graphs --lengths 16384 --impl ours,peer --peer-batch 8 --out $out/throughput-16k-peer"
  "pytest-shared|python3 -m pytest -m gpu -s -q tests/test_generate_shared.py tests/test_hostcopy.py tests/test_model_gpu.py::test_greedy_cuda_graphs_match_eager"
  # the whole GPU test suite, sharded as `plan.sh tests` runs it, inside the step's limit (the goal: within one
  # 10-minute call); vLLM's test on the trained hybrid too
  "pytest-gpu|env PYTHONPATH=$vpath TEST_GPU_NO_PACK=1 LONGCTX_VLLM_MODEL=$m/hybrid bash scripts/gpu/test-gpu.sh $((limit - 20)) 4"
  # vLLM with each 64k prompt prefilled in one engine step instead of its default 16k chunks: what chunking costs it
  "throughput-64k-chunk64k|$tput --lengths 65536 --impl vllm --vllm-max-num-batched-tokens 65536 --out $out/throughput-64k-chunk64k"
)
if [ -z "${DRY:-}" ]; then  # eval_throughput runs vLLM's side through --vllm-python: a wrapper, /tmp/vsite first
  printf '#!/usr/bin/env bash\nPYTHONPATH=%s exec python3 "$@"\n' "$vpath" > /tmp/vsite-python
  chmod +x /tmp/vsite-python
fi
. "$(dirname "$0")/steps.sh"
run_steps "$out" "$limit" '^\||first token|agree|Error' "${steps[@]}"
