# Sourced by start-lane.sh, cold-start.sh and test-gpu.sh: the environment every job on the GPU machine runs in.
#   copy_tree SRC DEST   the working tree (without the staged wheels, vLLM's too, git and the carried cache) into DEST
#   lane_env KCACHE      offline Hub, unbuffered output, and one kernel cache: LONGCTX_KERNEL_CACHE=KCACHE
#                        (Triton, inductor and tilelang under it, longctx/env.py; their own variables unset)
copy_tree() {
  tar -C "$1" --exclude=.whl --exclude=.whl_tl --exclude=.whl_parts --exclude=.vllm_whl --exclude=.vllm_parts \
    --exclude=.git --exclude=.tcache -cf - . \
    | tar -C "$2" -xf -
}

lane_env() {
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  export LONGCTX_KERNEL_CACHE="$1" OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
  unset TRITON_CACHE_DIR TORCHINDUCTOR_CACHE_DIR TILELANG_CACHE_DIR
}
