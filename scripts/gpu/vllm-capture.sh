#!/usr/bin/env bash
# A vLLM step of vllm-lane.sh that follows what an earlier step's vLLM start did:
#   vllm-capture.sh retry PREV_DIR COMMAND...   run COMMAND with --vllm-enforce-eager only if PREV_DIR's
#                                               eval_throughput.json has no vLLM row that ran (status ok)
#   vllm-capture.sh adapt PREV_DIR COMMAND...   run COMMAND, with --vllm-enforce-eager added if it has none
# A compiled vLLM start (torch.compile, CUDA graph capture) that outlives the step is retried eager, so the lease
# gets a vLLM figure at all; an eager row is a weaker vLLM (no graphs in decode) and says so
# (engine.enforce_eager in the rows). A PREV_DIR that does not exist is a step that did not run (ONLY= left it out):
# then nothing says the compiled start fails, so `adapt` runs COMMAND as given and `retry` runs nothing.
set -u
mode=${1:-} prev=${2:-}
shift 2 || { echo "usage: vllm-capture.sh retry|adapt PREV_DIR COMMAND..." >&2; exit 2; }
[ $# -gt 0 ] || { echo "vllm-capture.sh: no command" >&2; exit 2; }
if [ ! -d "$prev" ]; then
  case "$mode" in
  retry) echo "vllm-capture: $prev did not run; no retry"; exit 0 ;;
  adapt) echo "vllm-capture: $prev did not run; compiled as given"; exec "$@" ;;
  esac
fi
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
  echo "vllm-capture: no vLLM row ran in $prev; again with --vllm-enforce-eager"
  exec "$@" --vllm-enforce-eager ;;
adapt)
  if [ "$ran" = 1 ]; then exec "$@"; fi
  echo "vllm-capture: no vLLM row ran in $prev; --vllm-enforce-eager"
  exec "$@" --vllm-enforce-eager ;;
*) echo "usage: vllm-capture.sh retry|adapt PREV_DIR COMMAND..." >&2; exit 2 ;;
esac
