#!/usr/bin/env bash
# Start one long job on the GPU machine, detached, and return at once (the call that starts it must be
# followed by poll calls back to back: the machine is handed back 30 s after a call ends, with all on it).
#
#   call 1, carry [".whl_tl"]:          python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl_tl/*.whl
#   call 2, carry [".whl", ".tcache"]:  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#                                         && bash scripts/gpu/start-lane.sh "python3 -m longctx study configs/experiments/X.yaml --out /tmp/w/study ..." \
#                                         && bash scripts/gpu/poll.sh 520
#   call 3.., no carry:                 bash scripts/gpu/poll.sh 560      (each returns $OUT/x.tgz, the state so far)
#
# The repository is copied to /tmp/repo and the job runs there (so later calls' working trees do not
# disturb it), writing under /tmp/w (logs in /tmp/w/logs). Triton's autotune results of earlier runs,
# .tcache/tcache.tgz (git-ignored; poll.sh brings back a fresh one as tcache.tgz: copy it there), are
# restored into TRITON_CACHE_DIR: fla autotunes with cache_results=True, so the first training step
# then comes in about a minute instead of several (68 s against ~345 s for the study-20m hybrid).
set -u
[ $# -ge 1 ] || { echo "usage: start-lane.sh 'COMMAND'" >&2; exit 2; }
src=$PWD
rm -rf /tmp/repo /tmp/w && mkdir -p /tmp/repo /tmp/w/logs /tmp/tcache/triton
tar -C "$src" --exclude=.whl --exclude=.whl_tl --exclude=.git -cf - . | tar -C /tmp/repo -xf -
cd /tmp/repo
export PYTHONPATH=/tmp/site:/tmp/repo HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TRITON_CACHE_DIR=/tmp/tcache/triton OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
[ -f "$src/.tcache/tcache.tgz" ] && tar -C /tmp/tcache -xzf "$src/.tcache/tcache.tgz" \
  && echo "tcache: $(find /tmp/tcache -type f | wc -l) files restored"
{ nvidia-smi --query-gpu=name,memory.total --format=csv
  python3 -c "import torch, transformers, fla; print(torch.__version__, transformers.__version__, fla.__version__)"; } \
  > /tmp/w/logs/gpu.txt 2>&1
date -u +%FT%TZ > /tmp/w/logs/t0
setsid nohup bash -c "$1; echo \"lane rc=\$? \$(date -u +%T)\"; touch /tmp/w/lane.done" > /tmp/w/logs/lane.log 2>&1 < /dev/null &
(while sleep 20; do echo "$(date -u +%T) $(nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader | tr '\n' ' ')"; done) \
  > /tmp/w/logs/smi.log 2>&1 &
echo "launched: $1"
