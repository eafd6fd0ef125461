#!/usr/bin/env bash
# Trained models of a lane brought home and carried to the next machine, so that a lane whose machine is taken
# back continues on a fresh one without training them again (study-20m's bases: ~60 MB in bf16, 6-8 minutes
# of pretraining each).
#
#   there, start:  KEEP="budget/hybrid-s0/base gate/transformer-s0/base" bash scripts/gpu/start-lane.sh "..."
#                  (the run directories under /tmp/w to keep, in the order they should come home)
#   there, polls:  poll.sh runs `keep.sh pack $OUT`: the first kept directory whose training is done (its
#                  HF export complete) and not yet sent comes back as keep.tgz.part0.. (15 MiB parts, at most 4,
#                  without checkpoints/), in place of the kernel cache (64 MiB a call); one directory a poll
#   here:          bash scripts/gpu/keep.sh arrange /work/.device/A /work/.device/B ...   (oldest first)
#                  -> .lane_restore/p0.. (each fits next to the working tree in one call), names the calls; the
#                  newest folder's x.tgz goes along (what the evaluations wrote into the kept directories)
#   next machine:  one call per part, carry [".lane_restore/pK"]: bash scripts/gpu/keep.sh take
#                  (beside the wheel calls, back to back); start-lane.sh then restores them into /tmp/w before
#                  the lane starts (`keep.sh restore`), and `longctx study` skips what is done
#
# LANE (default /tmp/w), LONGCTX_RESTORE (default /tmp/lane-restore), LONGCTX_CARRY_MIB (default 64).
set -euo pipefail
lane=${LANE:-/tmp/w}
stage=${LONGCTX_RESTORE:-/tmp/lane-restore}
here=$(cd "$(dirname "$0")" && pwd)

done_run() { [ -f "$1/longctx_train.json" ] && [ -f "$1/config.json" ] && ls "$1"/*.safetensors > /dev/null 2>&1; }

case "${1:-}" in
pack)  # pack OUT
  out=$2
  [ -f "$lane/logs/keep" ] || exit 0
  for d in $(cat "$lane/logs/keep"); do
    mark="$lane/logs/kept.$(echo "$d" | tr '/' '_')"
    [ -e "$mark" ] && continue
    done_run "$lane/$d" || continue
    rm -f "$out"/keep.tgz.part*
    tar czf - -C "$lane" --exclude=checkpoints --exclude=.longctx.lock "$d" | split -b 15m -d -a 1 - "$out/keep.tgz.part"
    n=$(ls "$out"/keep.tgz.part* | wc -l)
    if [ "$n" -gt 4 ]; then
      rm -f "$out"/keep.tgz.part*
      echo "keep: $d packs into $n parts of 15 MiB, more than one call brings back; not kept" | tee "$mark"
      continue
    fi
    echo "$d" > "$mark"
    echo "keep: $d in $n part(s) (keep.tgz.part*)"
    exit 0
  done
  ;;
arrange)  # arrange DEVICE_DIR... (oldest first)
  shift
  [ $# -ge 1 ] || { echo "usage: keep.sh arrange DEVICE_DIR..." >&2; exit 2; }
  root=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
  cd "$root"
  . "$here/parts.sh"  # spread
  files=()
  k=0
  for d in "$@"; do
    if ls "$d"/keep.tgz.part* > /dev/null 2>&1; then
      for f in "$d"/keep.tgz.part*; do files+=("$f:keep-$k.tgz.${f##*.}"); done
      k=$((k + 1))
    fi
  done
  last=${*: -1}
  [ -f "$last/x.tgz" ] && files+=("$last/x.tgz:x.tgz")
  [ ${#files[@]} -gt 0 ] || { echo "keep: nothing kept in $*" >&2; exit 2; }
  n=$(spread .lane_restore "${files[@]}") || { echo "keep: nothing arranged" >&2; exit 2; }
  echo "keep: $k kept run(s) in $n part(s); one call each, carry:"
  for ((i = 0; i < n; i++)); do echo "  [\".lane_restore/p$i\"]"; done
  ;;
take)
  ls -d .lane_restore/p*/ > /dev/null 2>&1 || { echo "keep: no .lane_restore/pK carried in this call" >&2; exit 2; }
  mkdir -p "$stage"
  cp .lane_restore/p*/* "$stage/"
  echo "keep: $(ls "$stage" | wc -l) file(s) in $stage"
  ;;
restore)
  [ -d "$stage" ] || exit 0
  mkdir -p "$lane"
  restored=()
  for first in "$stage"/keep-*.tgz.part0; do
    [ -f "$first" ] || continue
    set="${first%.part0}"
    d=$(cat "$set".part* | tar tzf - | sed -n 1p)  # the kept directory, the archive's first entry
    cat "$set".part* | tar xzf - -C "$lane"
    restored+=("${d%/}")
  done
  if [ -f "$stage/x.tgz" ] && [ ${#restored[@]} -gt 0 ]; then  # what was written into them after they were packed
    tmp=$(mktemp -d)
    tar xzf "$stage/x.tgz" -C "$tmp"
    for d in "${restored[@]}"; do [ -d "$tmp/w/$d" ] && cp -rn "$tmp/w/$d/." "$lane/$d/"; done
    rm -rf "$tmp"
  fi
  for d in "${restored[@]}"; do find "$lane/$d" -name .longctx.lock -delete; done  # a lock of the old machine's
  for d in "${restored[@]}"; do
    if done_run "$lane/$d"; then echo "keep: restored $d"; else echo "keep: $d restored incomplete" >&2; fi
  done
  ;;
*)
  echo "usage: keep.sh pack OUT | arrange DEVICE_DIR... | take | restore" >&2
  exit 2
  ;;
esac
