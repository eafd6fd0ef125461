#!/usr/bin/env bash
# The training-speed measurements of one lease, one after another on one GPU (nothing else on it), each cell's
# raw JSON and log under OUT_DIR/<name>/: equal settings first (ours against transformers + fla and fla's own
# hybrid model, both sides with or both without activation checkpointing), then ours' loss, attention and RoPE
# options, then packed documents (flex against torch's varlen flash-attention). Run it as a lane:
#
#   wheels as in scripts/gpu/start-lane.sh, then in the last wheel call
#     bash scripts/gpu/start-lane.sh "bash scripts/gpu/speed-lane.sh /tmp/w/speed" && bash scripts/gpu/poll.sh 480
#   then `bash scripts/gpu/poll.sh 560` calls back to back (x.tgz holds w/speed/*/train_throughput.json);
#   here: `python3 bench/speed_table.py <unpacked>/w/speed/*/train_throughput.json --md table.md` (ratios within a cell);
#   the two eval cells (the transformer's 64k prefill, windowed layers by SDPA blocks or varlen) write eval_throughput.json.
#
# The cells run as steps of scripts/gpu/steps.sh (log.txt each; OUT_DIR/steps.txt: time, rc, the tables).
# DRY=1 prints "name|command" instead of running them (tests/test_gpu_scripts.py parses each with the bench's
# own parser). STEP_LIMIT: seconds one cell may take (default 600: a fresh machine autotunes fla's kernels for
# hybrid-1b's shapes in the first cell). ONLY=name1,name2 runs those cells alone.
set -u
out=${1:-/tmp/w/speed}
limit=${STEP_LIMIT:-600}
cells=(
  # name | arguments of bench/train_throughput.py
  "h16-nockpt|--configs hybrid-1b --lengths 16384 --impl ours,peer,fla --no-checkpointing"
  "h16-ckpt|--configs hybrid-1b --lengths 16384 --impl ours,peer,fla"
  "h16-nockpt-ce-chunked|--configs hybrid-1b --lengths 16384 --impl ours --no-checkpointing --ce chunked"
  "h16-nockpt-ce-compiled|--configs hybrid-1b --lengths 16384 --impl ours --no-checkpointing --ce compiled"
  "h64-ckpt|--configs hybrid-1b --lengths 65536 --impl ours,peer,fla"
  "h64-nockpt|--configs hybrid-1b --lengths 65536 --impl ours,peer,fla --no-checkpointing"
  "t16-ckpt|--configs transformer-1b --lengths 16384 --impl ours,peer"
  "t16-nockpt|--configs transformer-1b --lengths 16384 --impl ours,peer --no-checkpointing"
  "t16-nockpt-varlen|--configs transformer-1b --lengths 16384 --impl ours --no-checkpointing --varlen-attention"
  "t64-nockpt-varlen|--configs transformer-1b --lengths 65536 --impl ours --no-checkpointing --varlen-attention"
  "h16-docs8|--configs hybrid-1b --lengths 16384 --impl ours --no-checkpointing --docs 8 --attn-backend flex"
  "h16-docs8-varlen|--configs hybrid-1b --lengths 16384 --impl ours --no-checkpointing --docs 8 --varlen-attention"
  "h16-nockpt-plain-rope|--configs hybrid-1b --lengths 16384 --impl ours --no-checkpointing --plain-rope"
  "t16-nockpt-plain-rope|--configs transformer-1b --lengths 16384 --impl ours --no-checkpointing --plain-rope"
  "h16-nockpt-profile|--configs hybrid-1b --lengths 16384 --impl ours --no-checkpointing --profile"
  # eval: | arguments of bench/eval_throughput.py (the transformer's prefill: windowed layers by SDPA blocks or varlen)
  "t64-eval|eval:--config transformer-1b --lengths 65536 --samples 4 --impl ours --cuda-graphs"
  "t64-eval-varlen|eval:--config transformer-1b --lengths 65536 --samples 4 --impl ours --cuda-graphs --varlen-attention"
)
steps=()
for cell in "${cells[@]}"; do
  name=${cell%%|*}
  args=${cell#*|}
  if [[ $args == eval:* ]]; then
    steps+=("$name|python3 bench/eval_throughput.py ${args#eval:} --out $out/$name")
  else
    steps+=("$name|python3 bench/train_throughput.py $args --steps 5 --warmup 2 --out $out/$name")
  fi
done
. "$(dirname "$0")/steps.sh"
run_steps "$out" "$limit" '^\|' "${steps[@]}"
