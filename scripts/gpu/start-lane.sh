#!/usr/bin/env bash
# Start one long job on the GPU machine, detached, and return at once (the call that starts it must be
# followed by poll calls back to back: the machine is handed back 30 s after a call ends, with all on it).
#
#   here, once:                  bash scripts/gpu/stage-wheels.sh pack     (the wheels in parts that fit next to the tree)
#   the calls below, checked against the staged parts:  bash scripts/gpu/plan.sh study|speed|tests|vllm [COMMAND]
#   calls 1..N-1, carry [".whl_parts/pK"]:   bash scripts/gpu/stage-wheels.sh take
#   call N, carry [".whl_parts/pN"]:         bash scripts/gpu/stage-wheels.sh take && bash scripts/gpu/stage-wheels.sh install \
#                                  && export PYTHONPATH=/tmp/site:$PWD \
#                                  && bash scripts/gpu/start-lane.sh "python3 -m longctx study configs/experiments/X.yaml --out /tmp/w/study ..." \
#                                  && bash scripts/gpu/poll.sh 520
#   calls after, no carry:       bash scripts/gpu/poll.sh 300      (each returns $OUT/x.tgz, the state so far; a machine
#                                taken back mid-call returns nothing of that call, so shorter polls lose less: twice
#                                on 2026-12-05 a machine was taken back 8-10 minutes into a lane)
# Issue every call right after the one before: a gap over 30 s hands the machine back with all on it (the lane,
# its models, its journals); the last x.tgz is then all that is left: unpack it here and
#   longctx study configs/experiments/X.yaml --out <unpacked>/w/study --only ... --finished-only
# writes the results of the evaluations it cut short from their journals.
# (64 MiB travel per call: the wheels, the ~21 MiB working tree and a kernel cache do not fit one call.)
#
# The repository is copied to /tmp/repo and the job runs there (so later calls' working trees do not
# disturb it), writing under /tmp/w (logs in /tmp/w/logs). Kernel caches: LONGCTX_KERNEL_CACHE=/tmp/kcache
# (Triton, inductor and tilelang under one directory, longctx/env.py). poll.sh brings back
# $OUT/kcache.tgz.part0..2: the whole cache in 15 MiB parts when it packs into 3 (files back from $OUT: 16 MiB
# each, 8 files), else kcache.tgz with fla's autotune results alone. Here `bash scripts/gpu/kcache.sh arrange
# <files_at>` puts the parts in .tcache/pK folders (git-ignored) and names one call per folder,
# `bash scripts/gpu/kcache.sh take` with carry [".tcache/pK"], issued between the wheel calls; the cache is
# restored here before the job starts, and fla's shipped autotune results (scripts/gpu/h200-autotune.tgz)
# fill in the kernels it lacks (with no cache carried, they are all there is).
# With the whole cache of a study-20m lane restored, a fresh H200's first training step came 22-23 s after
# process start (hybrid and transformer pretraining sharing the GPU; 55-87 s with the autotune results alone).
# A machine taken back loses the lane; the trained runs named in KEEP come home with the polls (scripts/gpu/keep.sh)
# and can be carried to the next machine, whose lane then starts after them.
set -u
[ $# -ge 1 ] || { echo "usage: start-lane.sh 'COMMAND'" >&2; exit 2; }
src=$PWD
rm -rf /tmp/repo /tmp/w && mkdir -p /tmp/repo /tmp/w/logs /tmp/kcache/triton
. "$src/scripts/gpu/lane-env.sh"
copy_tree "$src" /tmp/repo
cd /tmp/repo
lane_env /tmp/kcache
export PYTHONPATH=/tmp/site:/tmp/repo
bash "$src/scripts/gpu/kcache.sh" restore "$src/.tcache"
# trained runs of a lane before, carried by keep.sh take, back in place; KEEP: the runs poll.sh brings home
LANE=/tmp/w bash "$src/scripts/gpu/keep.sh" restore
[ -n "${KEEP:-}" ] && echo "$KEEP" > /tmp/w/logs/keep
{ nvidia-smi --query-gpu=name,memory.total --format=csv
  python3 -m longctx doctor; } \
  > /tmp/w/logs/gpu.txt 2>&1
date -u +%FT%TZ > /tmp/w/logs/t0
setsid nohup bash -c "$1; echo \"lane rc=\$? \$(date -u +%T)\"; touch /tmp/w/lane.done" > /tmp/w/logs/lane.log 2>&1 < /dev/null &
# detached like the lane: a loop left in this call's process group ends with the call
setsid nohup bash -c 'while sleep 20; do echo "$(date -u +%T) $(nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader | tr "\n" " ")"; done' \
  > /tmp/w/logs/smi.log 2>&1 < /dev/null &
echo "launched: $1"
