#!/usr/bin/env bash
# The kernel cache (LONGCTX_KERNEL_CACHE=/tmp/kcache: Triton with fla's autotune results, inductor, tilelang)
# across GPU machines, for start-lane.sh, poll.sh and test-gpu.sh:
#   kcache.sh restore DIR   unpack DIR/kcache.tgz.part* (in order), else DIR/kcache.tgz, else DIR/tcache.tgz
#                           (autotune results alone, older runs), else scripts/gpu/h200-autotune.tgz into /tmp/kcache
#                           (fla's autotune results, 74 files: study-20m's hybrid and hybrid-1b at 16k, one H200, torch 2.11, triton 3.6;
#                           a kernel whose source, shapes or versions differ has another key and autotunes anew)
#   kcache.sh pack OUT      the whole cache as OUT/kcache.tgz.part0.. in 15 MiB parts when it packs into 3 (a file
#                           back from $OUT is at most 16 MiB; 8 files, 64 MiB together), else OUT/kcache.tgz with
#                           fla's autotune results alone
# Copy what comes back into .tcache/ (git-ignored; clear the old parts first) and carry ".tcache".
set -u
kc=${LONGCTX_KERNEL_CACHE:-/tmp/kcache}  # start-lane.sh sets it to /tmp/kcache; poll.sh runs without it
case "${1:-}" in
restore)
  mkdir -p "$kc/triton"
  if ls "$2"/kcache.tgz.part* > /dev/null 2>&1; then
    cat "$2"/kcache.tgz.part* | tar -C "$kc" -xzf - && echo "kernel cache: $(find "$kc" -type f | wc -l) files from kcache.tgz.part*"
  else
    for f in "$2/kcache.tgz" "$2/tcache.tgz" "$(dirname "$0")/h200-autotune.tgz"; do
      if [ -f "$f" ]; then tar -C "$kc" -xzf "$f" && echo "kernel cache: $(find "$kc" -type f | wc -l) files from $(basename "$f")"; break; fi
    done
  fi
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
*)
  echo "usage: kcache.sh restore DIR | pack OUT" >&2
  exit 2
  ;;
esac
