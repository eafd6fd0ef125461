#!/usr/bin/env bash
# The device calls of one lease, in order, from what is staged here, each checked to fit the 64 MiB a call
# carries (the working tree plus its carry paths). Prints one line per call: its carry list and its command.
#
#   bash scripts/gpu/plan.sh study 'python3 -m longctx study configs/experiments/X.yaml --out /tmp/w/study ...'
#   bash scripts/gpu/plan.sh speed        # scripts/gpu/speed-lane.sh as a lane
#   bash scripts/gpu/plan.sh tests        # scripts/gpu/test-gpu.sh 540 4 in the last call
#   bash scripts/gpu/plan.sh vllm         # bench/vllm_peer parts too, then scripts/gpu/vllm-lane.sh as a lane
#
# What it reads: .whl_parts/pK (scripts/gpu/stage-wheels.sh pack), .tcache/pK (scripts/gpu/kcache.sh arrange;
# optional), .vllm_parts/NN (bench/vllm_peer/fetch-wheels.sh; vllm only). A part that no longer fits beside the
# tree (the tree grew since it was made) is named with the command that makes it again, and the exit code is 2.
# KEEP=... passes through to start-lane.sh (scripts/gpu/keep.sh); ONLY=step1,step2 and STEP_LIMIT=S to the speed and
# vllm lanes (scripts/gpu/steps.sh: those steps alone, in that order; the seconds one step may take); HYBRID_STEPS=N to
# the vllm lane alone (its hybrid's pretraining steps). After the last call: `bash scripts/gpu/poll.sh 300` calls back
# to back, each within 30 s of the one before.
set -u
lane=${1:-}
limit=$(( ${LONGCTX_CARRY_MIB:-64} * 1048576 ))
root=$(git rev-parse --show-toplevel) && cd "$root" || exit 2
. scripts/gpu/parts.sh  # tree_bytes
tree=$(tree_bytes)
for v in ONLY STEP_LIMIT HYBRID_STEPS; do  # a step list or limit: no spaces or quotes, as they go into the lane's command
  case "${!v:-}" in *[!A-Za-z0-9_.,-]*) echo "plan: $v=${!v}: letters, digits and , . _ - only" >&2; exit 2 ;; esac
done
pass="${ONLY:+ONLY=$ONLY }${STEP_LIMIT:+STEP_LIMIT=$STEP_LIMIT }"
case "$lane" in
  study) [ -n "${2:-}" ] || { echo "plan: study needs the lane's command" >&2; exit 2; }; job=$2 ;;
  speed) job="${pass}bash scripts/gpu/speed-lane.sh /tmp/w/speed" ;;
  vllm) job="${pass}${HYBRID_STEPS:+HYBRID_STEPS=$HYBRID_STEPS }bash scripts/gpu/vllm-lane.sh /tmp/w/vllm" ;;
  tests) job="" ;;
  *) echo "usage: plan.sh study 'COMMAND' | speed | tests | vllm" >&2; exit 2 ;;
esac
bad=0
size() { du -cb "$@" | tail -1 | cut -f1; }
fits() {  # fits NAME REMAKE PATH...: the tree and PATHs under the limit, else say what remakes them
  local name=$1 remake=$2 total
  shift 2
  total=$(( tree + $(size "$@") ))
  if [ "$total" -gt "$limit" ]; then
    echo "plan: $name and the tree are $((total / 1048576)) MiB, over ${LONGCTX_CARRY_MIB:-64}: $remake" >&2
    bad=1
  fi
}
calls=()
call() { calls+=("carry $1: $2"); }
mapfile -t wheels < <(ls -d .whl_parts/p* 2>/dev/null | sort -V)
[ ${#wheels[@]} -gt 0 ] || { echo "plan: no .whl_parts: bash scripts/gpu/stage-wheels.sh pack" >&2; exit 2; }
for w in "${wheels[@]}"; do fits "$w" "bash scripts/gpu/stage-wheels.sh pack" "$w"; done
for w in "${wheels[@]:0:${#wheels[@]}-1}"; do call "[\"$w\"]" "bash scripts/gpu/stage-wheels.sh take"; done
if ls .tcache/kcache.tgz* > /dev/null 2>&1; then
  echo "plan: .tcache holds a cache outside .tcache/pK, which no call carries: bash scripts/gpu/kcache.sh arrange .tcache" >&2
  bad=1
fi
for t in $(ls -d .tcache/p* 2>/dev/null | sort -V); do
  fits "$t" "bash scripts/gpu/kcache.sh arrange <the poll's files_at>" "$t"
  call "[\"$t\"]" "bash scripts/gpu/kcache.sh take"
done
last=${wheels[-1]}
install="bash scripts/gpu/stage-wheels.sh take && bash scripts/gpu/stage-wheels.sh install && export PYTHONPATH=/tmp/site:\$PWD"
if [ "$lane" = vllm ]; then
  call "[\"$last\"]" "$install"
  mapfile -t vparts < <(ls -d .vllm_parts/[0-9]* 2>/dev/null | sort -V)
  [ ${#vparts[@]} -gt 0 ] || { echo "plan: no .vllm_parts: bash bench/vllm_peer/fetch-wheels.sh" >&2; exit 2; }
  for v in "${vparts[@]}"; do fits "$v" "bash bench/vllm_peer/fetch-wheels.sh" "$v"; done
  for v in "${vparts[@]:0:${#vparts[@]}-1}"; do call "[\"$v\"]" "bash bench/vllm_peer/install.sh stash"; done
  last=${vparts[-1]}
  install="bash bench/vllm_peer/install.sh stash && bash bench/vllm_peer/install.sh install && export PYTHONPATH=/tmp/site:\$PWD"
fi
keep=${KEEP:+KEEP=\"$KEEP\" }
if [ "$lane" = tests ]; then
  call "[\"$last\"]" "$install && bash scripts/gpu/test-gpu.sh 540 4"
else
  call "[\"$last\"]" "$install && ${keep}bash scripts/gpu/start-lane.sh \"$job\" && bash scripts/gpu/poll.sh 300"
fi
[ "$bad" = 0 ] || exit 2
echo "tree $((tree / 1048576)) MiB; ${#calls[@]} calls back to back (no gap over 30 s):"
for i in "${!calls[@]}"; do echo "$((i + 1)). ${calls[$i]}"; done
[ "$lane" = tests ] || echo "then: bash scripts/gpu/poll.sh 300   (no carry), until logs/lane.done"
