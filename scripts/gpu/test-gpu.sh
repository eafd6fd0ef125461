#!/usr/bin/env bash
# The GPU tests on the GPU machine inside one call: `pytest -m gpu` split into SHARDS processes that run side
# by side (a fresh machine's first tests spend minutes compiling Triton kernels on the CPU, one core per
# process; the GPU work itself is small), each with -v and --durations into its own log under $OUT, so that
# what ran comes back even when the call's limit cuts it short. Tests marked gpu_alone (vLLM's: its engine asks
# for a share of the card's memory free at start) run after the shards, one process, the GPU to themselves.
#
#   calls 1..N: install the wheels as scripts/gpu/start-lane.sh says (scripts/gpu/stage-wheels.sh parts)
#   a kernel cache, if there is one: `bash scripts/gpu/kcache.sh take` calls, carry [".tcache/pK"] (kcache.sh arrange)
#   the next call:  export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/test-gpu.sh 540 4
#
# Arguments: SECONDS (default 540: the whole run stops there, leaving time to pack $OUT) and SHARDS (default 4:
# 29 tests in 341 s on a 16-core H200 machine). ALONE_S (default 150) of the SECONDS are kept for the gpu_alone
# tests when there are any: the shards stop that much earlier (on a fresh machine they may still be compiling),
# so vLLM's test always runs.
# The kernel cache: restored from the taken parts into /tmp/kcache (scripts/gpu/kcache.sh) and
# LONGCTX_KERNEL_CACHE points there (tests/conftest.py applies it); packed back into $OUT at the end.
# Summary: $OUT/gpu-tests.txt (per shard: rc, the pytest summary line, the slowest tests); the shards' logs, junit
# XML and test ids in $OUT/logs.tgz at the end (a call brings back 8 files; cut short, the loose files stay).
set -u
limit=${1:-540}
shards=${2:-4}
out=${OUT:-/tmp/gpu-tests}
mkdir -p "$out" /tmp/kcache
. scripts/gpu/lane-env.sh
lane_env /tmp/kcache
bash scripts/gpu/kcache.sh restore .tcache
t0=$(date +%s)
collect() { python3 -m pytest -m "$1" --collect-only -q -p no:cacheprovider tests/ 2>/dev/null | grep '::'; }
collect "gpu and not gpu_alone" > "$out/gpu-tests.ids"
collect "gpu and gpu_alone" > "$out/alone.ids"
n=$(wc -l < "$out/gpu-tests.ids")
a=$(wc -l < "$out/alone.ids")
[ "$n" -gt 0 ] || { echo "test-gpu.sh: no GPU tests collected" >&2; exit 1; }
echo "collected $n GPU tests in $(( $(date +%s) - t0 )) s; $shards shards, then $a alone"
reserve=0
[ "$a" -gt 0 ] && reserve=${ALONE_S:-150}
left() { local s=$((limit - 15 - $1 - ($(date +%s) - t0))); echo $((s > 1 ? s : 1)); }  # timeout 0 would mean none
shard() {  # shard NAME IDS_FILE KEEP: those tests in one process until KEEP s before the limit, into shardNAME.{xml,log,rc}
  timeout -k 10 "$(left "$3")" python3 -m pytest -v -p no:cacheprovider --durations=0 \
    --junitxml="$out/shard$1.xml" $(cat "$2") > "$out/shard$1.log" 2>&1
  echo "$?" > "$out/shard$1.rc"
}
for k in $(seq 0 $((shards - 1))); do
  awk -v k="$k" -v n="$shards" '(NR - 1) % n == k' "$out/gpu-tests.ids" > "$out/shard$k.ids"
  shard "$k" "$out/shard$k.ids" "$reserve" &
done
wait
names=$(seq 0 $((shards - 1)))
if [ "$a" -gt 0 ]; then
  shard -alone "$out/alone.ids" 0
  names="$names -alone"
fi
{
  echo "GPU tests: $n in $shards shards and $a alone, wall $(( $(date +%s) - t0 )) s"
  for k in $names; do
    echo "## shard $k: rc=$(cat "$out/shard$k.rc") $(grep -E '^=+ .* in [0-9.]+s.* =+$' "$out/shard$k.log" | tail -1)"
    grep -E '^[0-9.]+s (call|setup|teardown) ' "$out/shard$k.log" | head -5
    grep -E '^(FAILED|ERROR) ' "$out/shard$k.log"
  done
} | tee "$out/gpu-tests.txt"
# as a lane's step (TEST_GPU_NO_PACK=1) the lane's poll packs the kernel cache itself, outside the step's folder
[ -n "${TEST_GPU_NO_PACK:-}" ] && exit 0
# a call brings back 8 files of $OUT: the logs, ids and rc files as one logs.tgz beside the summary and the cache
# (a shard cut short by its timeout leaves no junit XML: nullglob, so tar packs what is there)
(cd "$out" && shopt -s nullglob && f=(*.ids *.log *.rc *.xml) && tar czf logs.tgz -- "${f[@]}" && rm -f -- "${f[@]}")
bash scripts/gpu/kcache.sh pack "$out"
