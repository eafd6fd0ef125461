#!/usr/bin/env bash
# The kernel cache (LONGCTX_KERNEL_CACHE=/tmp/kcache: Triton with fla's autotune results, inductor, tilelang)
# across GPU machines, for start-lane.sh, poll.sh and test-gpu.sh:
#   kcache.sh restore DIR   unpack the parts kcache.tgz.part* (in name order) found in DIR, DIR/p*/ and the stage
#                           folder of `take`, else DIR/kcache.tgz, else DIR/tcache.tgz (autotune results alone,
#                           older runs) into /tmp/kcache; then add scripts/gpu/h200-autotune.tgz's files that are
#                           not there yet (fla's autotune results, 207 files: study-20m's hybrid at 4k and 64k,
#                           hybrid-1b training and eval at 16k and 64k, the prefill from cached states, norms of the
#                           600-step models and extensions, most of the GPU tests' shapes (those that finished in
#                           one 580 s run), H200s; vLLM's own copies of fla's GDN kernels at 4k, one H100 (both
#                           sm_90); torch 2.11, triton 3.6; a kernel whose source, shapes or versions differ has
#                           another key and autotunes anew)
#   kcache.sh pack OUT      the whole cache as OUT/kcache.tgz.part0.. in 15 MiB parts when it packs into 3 (a file
#                           back from $OUT is at most 16 MiB; 8 files, 64 MiB together), else OUT/kcache.tgz with
#                           fla's autotune results alone
#   kcache.sh arrange SRC   here: SRC's parts (a poll's files_at folder) into .tcache/p0, .tcache/p1, ... each
#                           small enough to travel next to the working tree in one call; names the calls
#   kcache.sh take          there, in a call that carries [".tcache/pK"]: keep its parts in the stage folder
#                           (LONGCTX_KCACHE_STAGE, default /tmp/kcache-stage) for start-lane.sh's restore
# A whole cache (about 26 MiB packed for study-20m-budget) does not fit one call beside the tree and a wheel
# part: `arrange` it, and give each .tcache/pK a `take` call of its own before the call that starts the lane.
set -u
kc=${LONGCTX_KERNEL_CACHE:-/tmp/kcache}  # start-lane.sh sets it to /tmp/kcache; poll.sh runs without it
stage=${LONGCTX_KCACHE_STAGE:-/tmp/kcache-stage}
shipped="$(cd "$(dirname "$0")" && pwd)/h200-autotune.tgz"
case "${1:-}" in
restore)
  mkdir -p "$kc/triton"
  parts=$(for f in "$2"/kcache.tgz.part* "$2"/p*/kcache.tgz.part* "$stage"/kcache.tgz.part*; do
    [ -f "$f" ] && echo "$(basename "$f") $f"; done | sort -u -k1,1 | cut -d' ' -f2-)
  if [ -n "$parts" ]; then
    # shellcheck disable=SC2086
    cat $parts | tar -C "$kc" -xzf - && echo "kernel cache: $(find "$kc" -type f | wc -l) files from kcache.tgz.part* ($(echo $parts | wc -w))"
  else
    for f in "$2/kcache.tgz" "$2/tcache.tgz"; do
      if [ -f "$f" ]; then tar -C "$kc" -xzf "$f" && echo "kernel cache: $(find "$kc" -type f | wc -l) files from $(basename "$f")"; break; fi
    done
  fi
  before=$(find "$kc" -type f | wc -l)
  tar -C "$kc" --skip-old-files -xzf "$shipped"
  echo "kernel cache: $(( $(find "$kc" -type f | wc -l) - before )) files from h200-autotune.tgz"
  ;;
pack)
  [ -d "$kc" ] || exit 0
  echo "kernel cache: $(du -sh "$kc" | cut -f1) ($(du -sh "$kc"/* 2>/dev/null | tr '\n\t' '  '))"
  rm -f "$2"/kcache.tgz*
  tar czf - -C "$kc" . 2>/dev/null | split -b 15m -d -a 1 - "$2/kcache.tgz.part"
  if [ "$(ls "$2"/kcache.tgz.part* | wc -l)" -gt 3 ]; then
    rm -f "$2"/kcache.tgz.part*
    (cd "$kc" && find triton -name '*.autotune.json' | tar czf "$2/kcache.tgz" -T -) && echo "kcache.tgz: autotune results only"
  else
    echo "kcache: $(ls "$2"/kcache.tgz.part* | wc -l) part(s) of the whole cache"
  fi
  ;;
arrange)
  ls "$2"/kcache.tgz.part* > /dev/null 2>&1 || { echo "kcache: no kcache.tgz.part* in ${2:-?}" >&2; exit 2; }
  src=$(cd "$2" && pwd)
  root=$(git rev-parse --show-toplevel) && cd "$root" || exit 2
  . scripts/gpu/parts.sh  # spread
  held=$(mktemp -d) && cp "$src"/kcache.tgz.part* "$held/"  # SRC may be .tcache itself (an older flat layout)
  n=$(spread .tcache $(for f in "$held"/kcache.tgz.part*; do echo "$f:${f##*/}"; done))
  rc=$?
  rm -rf "$held"
  [ "$rc" = 0 ] || { echo "kcache: .tcache left as it was" >&2; exit 2; }
  echo "kcache: $n call(s), each: bash scripts/gpu/kcache.sh take   with carry:"
  for ((i = 0; i < n; i++)); do echo "  [\".tcache/p$i\"]"; done
  ;;
take)
  ls .tcache/p*/kcache.tgz.part* > /dev/null 2>&1 || { echo "kcache: no .tcache/pK carried in this call" >&2; exit 2; }
  mkdir -p "$stage" && cp .tcache/p*/kcache.tgz.part* "$stage/"
  echo "kcache: $(ls "$stage" | grep -c '^kcache.tgz.part') part(s) in $stage"
  ;;
*)
  echo "usage: kcache.sh restore DIR | pack OUT | arrange SRC | take" >&2
  exit 2
  ;;
esac
