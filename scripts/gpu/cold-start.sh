#!/usr/bin/env bash
# The first training steps of a fresh process with a kernel cache brought from another machine: does a cached
# warm-up bring the first step within a minute of start? Runs `longctx pretrain` for a few steps from /tmp/repo
# (where start-lane.sh runs its lanes, so the cache's entries were made at the same paths) with the cache of
# CACHE_DIR restored into /tmp/kcache (under COLD_ROOT, default /tmp), and writes $OUT/cold-start.txt: wall time from process start, each
# step's step_time_s and the first step's startup_s (process start -> training loop), the slowest imports; with
# PROFILE=1 also the functions with the most cumulative time under cProfile (where the seconds before and in
# step 1 go: CUDA initialisation, model build, compilation, autotuning; the profiler's own overhead inflates
# the times), the whole profile as $OUT/cold-start.prof.
#
#   calls 1..2, carry [".whl_parts/p0"], [".whl_parts/p1"]:   bash scripts/gpu/stage-wheels.sh take
#   calls 3.., carry [".tcache/pK"] (a lane's kcache.tgz.part* from poll.sh, `kcache.sh arrange`d here):
#                                      bash scripts/gpu/kcache.sh take
#   last call, carry [".whl_parts/p2"]:   bash scripts/gpu/stage-wheels.sh take && bash scripts/gpu/stage-wheels.sh install \
#                                      && bash scripts/gpu/cold-start.sh
# (restore reads the taken parts; with none taken, only the shipped autotune results are there.)
# The environment passes through: `LONGCTX_VARLEN_ATTENTION=1 bash scripts/gpu/cold-start.sh` runs the packed
# documents' attention on torch's built-in flash-attention instead of compiling FlexAttention, the part of
# step 1 that no autotune cache removes.
#
# Arguments: CACHE_DIR (besides the taken parts; missing and nothing taken: only scripts/gpu/h200-autotune.tgz), CONFIG
# (default: the study-20m-budget hybrid pretraining, whose kernels a budget lane compiles), STEPS (default 4:
# one curriculum step at 1024 tokens, three at 4096), LIMIT seconds (default 150).
set -u
cache=${1:-/nonexistent}
config=${2:-docs/study-20m/budget/configs/pretrain-hybrid-s1.yaml}
steps=${3:-4}
limit=${4:-150}
out=${OUT:-/tmp/cold-start}
root=${COLD_ROOT:-/tmp}  # repo/, kcache/ and cold/ (the run) go here; /tmp on the GPU machine, as in start-lane.sh
src=$PWD
mkdir -p "$out"
rm -rf "$root/repo" "$root/kcache" "$root/cold" && mkdir -p "$root/repo" "$root/kcache/triton"
. "$src/scripts/gpu/lane-env.sh"
copy_tree "$src" "$root/repo"
cd "$root/repo" || exit 1
lane_env "$root/kcache"
export PYTHONPATH="/tmp/site:$root/repo"
{
  bash "$src/scripts/gpu/kcache.sh" restore "$cache"
  nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null || echo "no nvidia-smi"
  t0=$(date +%s.%N)
  prof=()
  [ "${PROFILE:-0}" = 1 ] && prof=(-m cProfile -o "$out/cold-start.prof")
  timeout "$limit" python3 -X importtime "${prof[@]}" -m longctx pretrain --config "$config" --out "$root/cold" --steps "$steps" \
    --no-progress > "$root/cold.out" 2> "$root/cold.err"
  echo "rc=$? wall_s=$(python3 -c "import time; print(round(time.time() - $t0, 1))") (limit $limit s)"
  python3 - "$root/cold/metrics.jsonl" <<'EOF'
import json, sys
try:
    rows = [json.loads(line) for line in open(sys.argv[1])]
except OSError:
    rows = []
for r in rows:
    if "step_time_s" in r:
        print(f"step {r['step']} seq_len {r['seq_len']}: step_time_s {r['step_time_s']:.1f}"
              + (f", startup_s {r['startup_s']:.1f}" if "startup_s" in r else ""))
EOF
  grep -v "^import time" "$root/cold.err" | tail -5 | cut -c1-300
  echo "slowest imports (cumulative us):"
  grep "^import time" "$root/cold.err" | sort -t'|' -k2 -n | tail -15 | cut -c1-110
  [ "${PROFILE:-0}" = 1 ] && echo "most cumulative time (cProfile; s):" && python3 - "$out/cold-start.prof" <<'EOF'
import pstats, sys
try:
    stats = pstats.Stats(sys.argv[1]).stats
except (OSError, EOFError, TypeError, ValueError):  # cut by the limit before the profile was written
    sys.exit(print("no profile (the run did not end within the limit)"))
rows = sorted(((ct, f"{fn}:{line}({name})") for (fn, line, name), (_, _, _, ct, _) in stats.items()), reverse=True)
for ct, where in [r for r in rows if r[0] >= 0.5][:40]:
    print(f"{ct:8.2f}  {where[-140:]}")
EOF
} 2>&1 | tee "$out/cold-start.txt"
