#!/usr/bin/env bash
# A vLLM step of vllm-lane.sh that follows what an earlier step's vLLM start did:
#   vllm-capture.sh retry PREV_DIR COMMAND...   run COMMAND with --vllm-max-capture 16 only if PREV_DIR's
#                                               eval_throughput.json has no vLLM row that ran (status ok)
#   vllm-capture.sh adapt PREV_DIR COMMAND...   run COMMAND, with --vllm-max-capture 16 added if it has none
# vLLM captures CUDA graphs for batches up to 512 at start-up by default; a start that outlives the step is
# retried capturing up to 16 (the timed batches of 8 replay the same graph, so the timed figures compare; the
# rows record the setting vLLM resolved: engine.max_cudagraph_capture_size).
set -u
mode=${1:-} prev=${2:-}
shift 2 || { echo "usage: vllm-capture.sh retry|adapt PREV_DIR COMMAND..." >&2; exit 2; }
[ $# -gt 0 ] || { echo "vllm-capture.sh: no command" >&2; exit 2; }
ran=$(python3 - "$prev/eval_throughput.json" <<'EOF'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["results"]
except (OSError, ValueError, KeyError):
    rows = []
print(int(any(r.get("impl") == "vllm" and r.get("status") == "ok" for r in rows)))
EOF
)
case "$mode" in
retry)
  if [ "$ran" = 1 ]; then echo "vllm-capture: vLLM ran in $prev; no retry"; exit 0; fi
  echo "vllm-capture: no vLLM row ran in $prev; again with --vllm-max-capture 16"
  exec "$@" --vllm-max-capture 16 ;;
adapt)
  if [ "$ran" = 1 ]; then exec "$@"; fi
  echo "vllm-capture: no vLLM row ran in $prev; --vllm-max-capture 16"
  exec "$@" --vllm-max-capture 16 ;;
*) echo "usage: vllm-capture.sh retry|adapt PREV_DIR COMMAND..." >&2; exit 2 ;;
esac
