#!/usr/bin/env bash
# The main job on the embedded default, offline, on CPU in minutes:
# pretrain the tiny hybrid at 512 tokens -> extend it with DRoPE to 2048 -> RULER at 1k and 2k -> table + plot.
# Usage: bash examples/quickstart.sh [OUT_DIR]   (default runs/quickstart; rerunning starts over)
set -euo pipefail
out=${1:-runs/quickstart}
dev=${DEVICE:-cpu}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

longctx pretrain --model hybrid-tiny --out "$out/base" --steps 150 --seq-len 512 --batch-size 4 \
    --device "$dev" --force
longctx extend --method drope --target 2048 --model "$out/base" --out "$out/drope-2k" --steps 20 \
    --batch-size 1 --device "$dev" --force
rm -f "$out/drope-2k/ruler.json" "$out/drope-2k/ruler.json.partial.jsonl"
longctx eval --model "$out/drope-2k" --lengths 1k,2k --samples 2 --device "$dev" \
    --out "$out/drope-2k/ruler.json"
longctx compare "$out"/*/ruler.json --per-task --csv "$out/ruler.csv" --plot "$out/ruler.png"
echo "quickstart done: $out (model, metrics.jsonl, ruler.json, ruler.csv, ruler.png)"
