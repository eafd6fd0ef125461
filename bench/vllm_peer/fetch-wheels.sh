#!/usr/bin/env bash
# Stage vLLM 0.26.0 for the GPU machine (Python 3.12, x86-64, torch 2.11.0 + CUDA 13, no network,
# at most 64 MiB carried per call): download vllm and the few of its requirements that offline
# `vllm.LLM(...).generate` imports and the GPU image lacks, into the git-ignored .vllm_whl/, then
# tar them and split the tar into pieces of PART_MB MiB (default: 64 less the working tree that every call
# sends, less 3, so a piece and the tree stay under 64 MiB), one folder each: .vllm_parts/NN/part.
# Run from the project root (needs pip and PyPI here):
#   bash bench/vllm_peer/fetch-wheels.sh [EXTRA_SPEC ...]        # KEEP_FA2=1 keeps the FA2 kernels (see below)
# then carry one piece per device call and install with bench/vllm_peer/install.sh (the recipe is there).
#
# What goes in (each is imported at module level on the offline path; found by importing vllm,
# vllm.entrypoints.llm, the v1 engine core / core client / executors, the GPU worker and model runner,
# olmo_hybrid, the flash_attn / triton_attn / gdn_attn backends and the structured-output backends with
# only the GPU image's packages beside them, and adding what failed):
#   pydantic (+ pydantic-core, annotated-types, typing-inspection, typing-extensions): vllm.config
#   msgspec: sampling_params; pyzmq: engine core <-> client; cbor2: utils/hashing (config);
#   cachetools, pybase64: multimodal registry / media (imported by the engine regardless);
#   fastapi, starlette: entrypoints/llm -> pooling/offline -> entrypoints/serve/__init__;
#   openai (<3: 3.x needs httpx2, the image has httpx), jiter, distro, sniffio, openai-harmony:
#     config/reasoning -> reasoning parsers -> entrypoints/mcp; parser/*;
#   partial-json-parser: tool/reasoning parsers;
#   xgrammar, llguidance, apache-tvm-ffi: v1/structured_output backends (dataclass annotations resolve
#     their lazy modules at import); tvm-ffi 0.1.12, not vllm's pin 0.1.10: xgrammar 0.2.9 needs >= 0.1.11
#     (0.1.10 fails in load_lib_module), the pin serves flashinfer, left out, and 0.1.12 is also what
#     ../shared/gpu/fetch-wheels.sh gives our stack.
# What is left out, and why (vllm 0.26.0 METADATA lists 73 requirements):
# - on the GPU image already: torch 2.11.0, triton, transformers, tokenizers, safetensors, numpy,
#   huggingface-hub, pyyaml, regex, requests, psutil, py-cpuinfo, pillow, sentencepiece, tiktoken,
#   einops, cloudpickle, uvloop, prometheus-client, protobuf, aiohttp, anyio, httpx, numba, ninja,
#   opencv-python-headless, torchvision, torchaudio, setuptools, six, jinja2, filelock, tqdm, msgpack
#   (the image's list: /work/.library/device/KINDS.md, "Python packages already there").
# - not imported on the offline LLM path (server, tool calling, multimodal, other kernels), or
#   imported inside try/except: uvicorn, prometheus-fastapi-instrumentator, anthropic, mcp,
#   opentelemetry-*, model-hosting-container-standards, watchfiles, ijson, lm-format-enforcer,
#   outlines_core, lark, mistral_common, depyf (compile debug dumps only),
#   fastsafetensors, torchcodec, PyNvVideoCodec, nvtx, nvidia-cudnn-frontend, quack-kernels,
#   tokenspeed-mla, humming-kernels, setproctitle, blake3, python-json-logger,
#   tilelang (0.1.9: it would also clash with fla's 0.1.15 in /tmp/site).
# - flashinfer-python (~0.6.14) and nvidia-cutlass-dsl: optional kernels. On an H200 vLLM picks
#   FLASH_ATTN with the bundled FA3 for the attention layers; Olmo Hybrid's GDN layers run vLLM's own
#   Triton fla kernels (gdn_prefill_backend "flashinfer", the SM90 default, only names the metadata
#   mode for them; "cutedsl" is opt-in, Blackwell only). Without them: no FLASHINFER attention backend,
#   no FA4 / CuTe-DSL kernels (Blackwell, DSA), and VLLM_USE_FLASHINFER_SAMPLER=0 is required: vLLM's
#   CUDA sampler imports flashinfer when it is built otherwise (greedy decoding never uses it).
#   Adding them back costs ~112 MiB, two more pieces: flashinfer-python 0.6.14 (14 MiB; JIT-compiles
#   with nvcc at first use), nvidia-cutlass-dsl 4.6.0 with its -libs-base and -libs-cu13 (87 MiB),
#   nvidia-cudnn-frontend (11 MiB), cuda-tile; vllm's apache-tvm-ffi==0.1.10 pin is for them (flashinfer
#   itself accepts 0.1.6..0.2, so 0.1.12 should do).
# - from the vllm wheel itself (repacked, RECORD rewritten): vllm_flash_attn/_vllm_fa2_C.abi3.so
#   (124 MB zipped; Hopper runs FA3; FA2 serves only pre-Hopper GPUs, ALiBi and a few FA2-only paths;
#   KEEP_FA2=1 keeps it: 6 parts instead of 3), the vllm-rs Rust server frontend (15 MB) and
#   DeepGEMM's builds for other Pythons. If FA3 misbehaves, TRITON_ATTN needs neither.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
w=.vllm_whl parts=.vllm_parts
rm -rf "$w" "$parts"
mkdir -p "$w" "$parts"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
dl() { python3 -m pip download -q "${plat[@]}" -d "$w" "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# vllm, then what the offline path imports at module level (vllm/__init__ -> entrypoints/llm ->
# v1 engine core, core client, executor, gpu worker and model runner, olmo_hybrid, attention backends):
dl "pydantic>=2.12"  # with its four requirements: pydantic-core is pinned to the pydantic release
dl --no-deps "vllm==0.26.0" \
   "fastapi>=0.133.0,<0.137.0" "starlette>=1.0.1" \
   msgspec pyzmq cbor2 pybase64 cachetools partial-json-parser \
   "openai>=2.0.0,<3" jiter distro sniffio "openai-harmony>=0.0.3" \
   "xgrammar>=0.2.1,<1.0.0" "apache-tvm-ffi>=0.1.11,<0.1.13" "llguidance>=1.7.0,<1.8.0" \
   "compressed-tensors==0.17.0" loguru \
   "$@"  # compressed-tensors (and its loguru): the engine core imports it for Olmo Hybrid (seen on an H100)
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
tree=$(bash "$root/scripts/gpu/stage-wheels.sh" tree)
mb=${PART_MB:-$(( 64 - tree / 1048576 - 3 ))}  # a piece next to the tree every call carries
tar -cf - -C "$w" . | split -b "${mb}m" -d -a 2 - "$parts/part_"
n=$(ls "$parts" | wc -l)
sum=$(cat "$parts"/part_* | sha256sum | cut -d' ' -f1)
for f in "$parts"/part_*; do
  k=${f##*_}; mkdir "$parts/$k"; mv "$f" "$parts/$k/part"
  echo "$n $sum" > "$parts/$k/info"  # parts in all and the tar's sha256: install.sh checks both
done
ls -l "$w" | awk 'NR > 1 {t += $5; printf "%8.1f MiB  %s\n", $5 / 1048576, $9} END {printf "%8.1f MiB  in all\n", t / 1048576}'
echo "$n parts of at most $mb MiB: $parts/00 .. $parts/$(printf %02d $((n - 1))) (tar sha256 ${sum:0:16})"
echo "carry one per call, back to back; recipe in bench/vllm_peer/install.sh"
