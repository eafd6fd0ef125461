#!/usr/bin/env bash
# Stage vLLM 0.26.0 for the GPU machine (Python 3.12, x86-64, torch 2.11.0 + CUDA 13, no network,
# at most 64 MiB carried per call): download vllm and the few of its requirements that offline
# `vllm.LLM(...).generate` imports and the GPU image lacks, into the git-ignored .vllm_whl/, then
# tar them and split the tar into pieces of PART_MB MiB (default 56: a piece plus the ~7 MiB working
# tree that every call sends stays under 64 MiB), one folder each: .vllm_parts/NN/part.
# Run from the project root (needs pip and PyPI here):
#   bash bench/vllm/fetch-wheels.sh [EXTRA_SPEC ...]        # KEEP_FA2=1 keeps the FA2 kernels (see below)
# then carry one piece per device call and install with bench/vllm/install.sh (the recipe is there).
#
# What is left out, and why (vllm 0.26.0 METADATA lists 73 requirements):
# - on the GPU image already: torch 2.11.0, triton, transformers, tokenizers, safetensors, numpy,
#   huggingface-hub, pyyaml, regex, requests, psutil, py-cpuinfo, pillow, sentencepiece, tiktoken,
#   einops, cloudpickle, uvloop, prometheus-client, protobuf, aiohttp, anyio, httpx, numba, ninja,
#   opencv-python-headless, torchvision, torchaudio, setuptools, six, jinja2, filelock, tqdm, msgpack
#   (the image's list: /work/.library/device/KINDS.md, "Python packages already there").
# - not imported on the offline LLM path (server, tool calling, multimodal, other kernels): fastapi,
#   starlette, uvicorn, prometheus-fastapi-instrumentator, anthropic, mcp, opentelemetry-*,
#   model-hosting-container-standards, watchfiles, partial-json-parser, ijson, lm-format-enforcer,
#   outlines_core, lark, mistral_common, compressed-tensors, depyf, fastsafetensors, torchcodec,
#   PyNvVideoCodec, nvtx, nvidia-cudnn-frontend, quack-kernels, tokenspeed-mla, humming-kernels,
#   tilelang (0.1.9: it would also clash with fla's 0.1.15 in /tmp/site), setproctitle, blake3.
# - flashinfer-python and nvidia-cutlass-dsl: optional kernels (FlashInfer attention/sampling, FA4 and
#   CuTe-DSL ops). On an H200 vLLM picks FLASH_ATTN with the bundled FA3 and Triton kernels for GDN;
#   without them VLLM_ATTENTION_BACKEND=FLASHINFER and FA4 are unavailable (FLASH_ATTN / TRITON_ATTN work).
# - from the vllm wheel itself (repacked, RECORD rewritten): vllm_flash_attn/_vllm_fa2_C.abi3.so
#   (124 MB zipped; Hopper runs FA3; FA2 serves only pre-Hopper GPUs, ALiBi and a few FA2-only paths;
#   KEEP_FA2=1 keeps it), the vllm-rs Rust server frontend (15 MB) and DeepGEMM's builds for other Pythons.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
w=.vllm_whl parts=.vllm_parts
rm -rf "$w" "$parts"
mkdir -p "$w" "$parts"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
dl() { python3 -m pip download -q --no-deps "${plat[@]}" -d "$w" "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# vllm, then what the offline path imports at module level (vllm/__init__ -> entrypoints/llm ->
# v1 engine core, core client, executor, gpu worker and model runner, olmo_hybrid, attention backends):
dl "vllm==0.26.0" \
   "pydantic>=2.12" pydantic-core annotated-types typing-inspection \
   msgspec pyzmq cbor2 pybase64 cachetools \
   "openai>=2.0.0" jiter distro sniffio "openai-harmony>=0.0.3" \
   "xgrammar>=0.2.1,<1.0.0" "apache-tvm-ffi==0.1.10" \
   "$@"
# Trim the vllm wheel: drop files the H200 offline path never loads, and their RECORD lines.
python3 - "$w"/vllm-0.26.0-*.whl "${KEEP_FA2:-0}" <<'PY'
import os, re, sys, zipfile
path, keep_fa2 = sys.argv[1], sys.argv[2] == "1"
drop = [r"vllm/vllm-rs$", r"vllm/third_party/deep_gemm/_C\.cpython-3(10|11|13|14)-"]
if not keep_fa2:
    drop.append(r"vllm/vllm_flash_attn/_vllm_fa2_C\.abi3\.so$")
gone = lambda name: any(re.search(p, name) for p in drop)
tmp = path + ".tmp"
with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if gone(info.filename):
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(l for l in data.splitlines(True) if not gone(l.split(b",")[0].decode()))
        dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
os.replace(tmp, path)
print(f"trimmed {os.path.basename(path)} to {os.path.getsize(path) / 2**20:.1f} MiB")
PY
mb=${PART_MB:-56}
tar -cf - -C "$w" . | split -b "${mb}m" -d -a 2 - "$parts/part_"
n=$(ls "$parts" | wc -l)
sum=$(cat "$parts"/part_* | sha256sum | cut -d' ' -f1)
for f in "$parts"/part_*; do
  k=${f##*_}; mkdir "$parts/$k"; mv "$f" "$parts/$k/part"
  echo "$n $sum" > "$parts/$k/info"  # parts in all and the tar's sha256: install.sh checks both
done
ls -l "$w" | awk 'NR > 1 {t += $5; printf "%8.1f MiB  %s\n", $5 / 1048576, $9} END {printf "%8.1f MiB  in all\n", t / 1048576}'
echo "$n parts of at most $mb MiB: $parts/00 .. $parts/$(printf %02d $((n - 1))) (tar sha256 ${sum:0:16})"
echo "carry one per call, back to back; recipe in bench/vllm/install.sh"
