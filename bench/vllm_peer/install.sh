#!/usr/bin/env bash
# Install vLLM 0.26.0 on the GPU machine (no network) from the pieces that bench/vllm_peer/fetch-wheels.sh
# made, into /tmp/vsite, a target of its own: vLLM's pins (tilelang 0.1.9 against fla's 0.1.15,
# apache-tvm-ffi 0.1.10) clash with our stack in /tmp/site. The staged set leaves tilelang out and ships
# apache-tvm-ffi 0.1.12, but vLLM still gets its own folder and its own PYTHONPATH.
#
# Recipe (N pieces .vllm_parts/00 .. NN; fetch-wheels.sh prints N). A call carries at most 64 MiB and
# every call also sends the ~7 MiB working tree, hence one piece (<= 56 MiB) per call. The machine keeps
# /tmp only while it is held: it goes back ~30 s after a call ends, so send the calls back to back (a
# gap longer than that and the pieces already in /tmp/vparts are gone: start again from call 0).
#   call k < N-1: carry [".vllm_parts/0k"]
#                 command: bash bench/vllm_peer/install.sh stash
#   call N-1:     carry [".vllm_parts/<last>"]
#                 command: bash bench/vllm_peer/install.sh stash && bash bench/vllm_peer/install.sh install
#                          && PYTHONPATH=/tmp/vsite python3 bench/vllm_peer/smoke.py MODEL_DIR --enforce-eager
# `stash` copies the carried piece(s) into /tmp/vparts (outside the repo, so the next call's tree copy
# cannot touch them) and lists what is there; `install` checks that all N pieces are there and that
# the joined tar's sha256 matches, unpacks the wheels to /tmp/vwhl, installs them with
#   python3 -m pip install --no-index --no-deps --no-compile --target /tmp/vsite /tmp/vwhl/*.whl
# and imports the offline path (vllm.LLM, the v1 engine core and GPU worker, Olmo Hybrid). After it:
#   export VLLM_USE_FLASHINFER_SAMPLER=0              # FlashInfer is left out; vLLM's CUDA sampler imports
#                                                      # it unless this is 0 (smoke.py and `longctx eval`
#                                                      # set it themselves when flashinfer is absent)
#   export PYTHONPATH=/tmp/vsite:$PWD                 # vLLM alone (smoke.py)
#   export PYTHONPATH=/tmp/vsite:/tmp/site:$PWD       # smoke.py --against-longctx (our model needs fla) and
#                                                      # LONGCTX_VLLM_MODEL=DIR pytest -m gpu tests/test_evaluate_vllm.py
#   export PYTHONPATH=/tmp/vsite:/tmp/site:$PWD       # with lm-eval from ../shared/gpu/fetch-wheels.sh,
#                                                      # for `longctx eval --backend vllm`
# (/tmp/vsite first: it has no tilelang, so fla's tilelang 0.1.15 in /tmp/site is the one found, and
# both hold apache-tvm-ffi 0.1.12.) A piece and our wheels do not fit in one call: install our stack in
# calls of their own (scripts/gpu/stage-wheels.sh: pack here, take/install there), back to back with these.
# Expected: 165 MiB of wheels (FA2 dropped; 289 MiB with KEEP_FA2=1), in pieces of 64 MiB less the working
# tree (about 40 MiB with a 21 MiB tree: 5 pieces, 8 with KEEP_FA2=1).
# The install takes ~1 minute; the whole recipe needs the machine held for N calls plus the smoke run.
set -euo pipefail
stash=/tmp/vparts whl=/tmp/vwhl site=${VSITE:-/tmp/vsite}
root=$(cd "$(dirname "$0")/../.." && pwd)
case "${1:-}" in
stash)
  mkdir -p "$stash"
  found=0
  for d in "$root"/.vllm_parts/*/; do
    [ -f "$d/part" ] || continue
    k=$(basename "$d")
    cp "$d/part" "$stash/part_$k.tmp" && mv "$stash/part_$k.tmp" "$stash/part_$k"
    cp "$d/info" "$stash/info"
    found=1
  done
  [ "$found" = 1 ] || { echo "install.sh stash: no .vllm_parts/NN/part here; carry one" >&2; exit 2; }
  read -r n sum < "$stash/info"
  echo "pieces in $stash: $(ls "$stash" | grep -c '^part_[0-9]*$') of $n ($(ls "$stash" | grep '^part_[0-9]*$' | tr '\n' ' '))"
  ;;
install)
  [ -f "$stash/info" ] || { echo "install.sh install: nothing in $stash; run the stash calls first" >&2; exit 2; }
  read -r n sum < "$stash/info"
  have=$(ls "$stash" | grep -c '^part_[0-9]*$' || true)
  for k in $(seq -f %02g 0 $((n - 1))); do
    [ -f "$stash/part_$k" ] || { echo "install.sh install: piece $k of $n missing in $stash (have $have); carry .vllm_parts/$k" >&2; exit 2; }
  done
  got=$(cat $(seq -f "$stash/part_%02g" 0 $((n - 1))) | sha256sum | cut -d' ' -f1)
  [ "$got" = "$sum" ] || { echo "install.sh install: joined tar sha256 $got, expected $sum; re-carry the pieces" >&2; exit 2; }
  rm -rf "$whl" && mkdir -p "$whl"
  cat $(seq -f "$stash/part_%02g" 0 $((n - 1))) | tar -xf - -C "$whl"
  rm -f "$stash"/part_*  # the wheels are unpacked; free the disk
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$whl"/*.whl
  # longctx's vLLM plugin (pyproject.toml's vllm.general_plugins entry point: Olmo Hybrid's conv weights load in
  # vLLM 0.26), registered here for longctx run from the tree (PYTHONPATH), as `pip install longctx` registers it
  ep="$site/longctx_vllm_plugin-0.dist-info"
  mkdir -p "$ep"
  printf 'Metadata-Version: 2.1\nName: longctx-vllm-plugin\nVersion: 0\n' > "$ep/METADATA"
  plugin=$(sed -n '/^\[project.entry-points."vllm.general_plugins"\]/,/^\[/{/^[a-z_]* = "/p}' "$root/pyproject.toml")
  [ -n "$plugin" ] || { echo "install.sh: pyproject.toml registers no vllm.general_plugins entry point" >&2; exit 2; }
  printf '[vllm.general_plugins]\n%s\n' "${plugin//\"/}" > "$ep/entry_points.txt"
  VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONPATH="$site" python3 - <<'PY'
import importlib, time
t = time.time()
import torch, vllm
for m in ("vllm.entrypoints.llm", "vllm.v1.engine.core", "vllm.v1.engine.core_client",
          "vllm.v1.executor.uniproc_executor", "vllm.v1.executor.multiproc_executor",
          "vllm.v1.worker.gpu_worker", "vllm.v1.worker.gpu_model_runner",
          "vllm.model_executor.models.olmo_hybrid", "vllm.v1.attention.backends.flash_attn",
          "vllm.v1.attention.backends.triton_attn", "vllm.v1.attention.backends.gdn_attn"):
    importlib.import_module(m)
from vllm.vllm_flash_attn.flash_attn_interface import FA3_AVAILABLE
from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler
TopKTopPSampler()  # on CUDA it imports flashinfer unless VLLM_USE_FLASHINFER_SAMPLER=0
print(f"vllm {vllm.__version__} at {vllm.__file__}; torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
      f"FA3 {FA3_AVAILABLE}; offline path imports in {time.time() - t:.1f} s")
PY
  ;;
*)
  echo "usage: bash bench/vllm_peer/install.sh stash|install (the recipe is in this file's header)" >&2
  exit 2
  ;;
esac
