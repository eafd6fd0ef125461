#!/usr/bin/env bash
# Stage the GPU machine's wheels (.whl_tl/ and .whl/ from ../shared/gpu/fetch-wheels.sh) in parts that fit
# next to the working tree in one call (every call carries the tree and its carry paths: 64 MiB in all).
#
#   here, once:                     bash scripts/gpu/stage-wheels.sh pack        # -> .whl_parts/p0 .. pN, names the calls
#   there, call k (carry [".whl_parts/pK"], back to back, no gap over 30 s):
#                                   bash scripts/gpu/stage-wheels.sh take
#   there, the last part's call:    bash scripts/gpu/stage-wheels.sh take && bash scripts/gpu/stage-wheels.sh install
#                                   (installs into /tmp/site; then export PYTHONPATH=/tmp/site:$PWD)
#
# LONGCTX_CARRY_MIB (default 64) is the per-call limit, LONGCTX_WHEEL_STAGE (default /tmp/wheel-stage) the
# folder the parts gather in there. `unpack` joins the parts there without installing (install does it too).
set -euo pipefail
stage=${LONGCTX_WHEEL_STAGE:-/tmp/wheel-stage}
here=$(cd "$(dirname "$0")" && pwd)
root=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
cd "$root"
. "$here/parts.sh"  # tree_bytes, carry_room

case "${1:-}" in
  tree)  # the bytes every call carries besides its carry paths (bench/vllm_peer/fetch-wheels.sh sizes its pieces by it)
    tree_bytes
    ;;
  pack)
    [ -d .whl_tl ] && [ -d .whl ] || { echo "stage-wheels: no .whl_tl/ or .whl/: run bash ../shared/gpu/fetch-wheels.sh first" >&2; exit 2; }
    tree=$(tree_bytes)
    part=$(carry_room)
    [ "$part" -gt 1048576 ] || { echo "stage-wheels: the working tree ($((tree / 1048576)) MiB) leaves no room under ${LONGCTX_CARRY_MIB:-64} MiB" >&2; exit 2; }
    rm -rf .whl_parts && mkdir -p .whl_parts/tmp
    tar cf - .whl_tl .whl | split -b "$part" -d -a 2 - .whl_parts/tmp/wheels.tar.
    i=0
    for f in .whl_parts/tmp/wheels.tar.*; do mkdir -p ".whl_parts/p$i" && mv "$f" ".whl_parts/p$i/"; i=$((i + 1)); done
    rmdir .whl_parts/tmp
    echo "stage-wheels: $i part(s) of at most $((part / 1048576)) MiB (tree $((tree / 1048576)) MiB); one call each, carry:"
    for ((k = 0; k < i; k++)); do echo "  [\".whl_parts/p$k\"]"; done
    ;;
  take)
    mkdir -p "$stage"
    found=$(ls -d .whl_parts/p*/ 2>/dev/null || true)
    [ -n "$found" ] || { echo "stage-wheels: no .whl_parts/pK carried in this call" >&2; exit 2; }
    cp .whl_parts/p*/wheels.tar.* "$stage/"
    echo "stage-wheels: $(ls "$stage" | grep -c '^wheels.tar.') part(s) in $stage"
    ;;
  unpack | install)
    ls "$stage"/wheels.tar.* > /dev/null 2>&1 || { echo "stage-wheels: no parts in $stage (take them first)" >&2; exit 2; }
    cat "$stage"/wheels.tar.* | tar -C "$stage" -xf -
    if [ "$1" = install ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$stage"/.whl_tl/*.whl
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$stage"/.whl/*.whl
      echo "stage-wheels: installed into /tmp/site"
    fi
    ;;
  *)
    echo "usage: stage-wheels.sh pack|take|unpack|install|tree" >&2
    exit 2
    ;;
esac
