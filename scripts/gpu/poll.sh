#!/usr/bin/env bash
# poll.sh SECONDS: wait until the lane of start-lane.sh is done or SECONDS have passed, print a summary,
# and pack /tmp/w (no weights, checkpoints or traces) into $OUT/x.tgz and the kernel cache into
# $OUT/kcache.tgz.part0.. (start-lane.sh), or instead of the cache a finished run named in KEEP (keep.sh). Keep SECONDS under the call's limit (and under the device time left), so the pack runs.
# Several studies may share the lane, each under /tmp/w/<name> (`study A --out /tmp/w/a & study B --out /tmp/w/b; wait`).
here=$(cd "$(dirname "$0")" && pwd)
end=$(( $(date +%s) + ${1:-500} ))
while [ "$(date +%s)" -lt $end ] && [ ! -f /tmp/w/lane.done ]; do sleep 10; done
cd /tmp/w || exit 1
echo "--- $(date -u +%T) t0=$(cat logs/t0)"; tail -5 logs/lane.log
grep -h "^study:" logs/lane.log 2>/dev/null | grep -v ": running on device" | tail -20
for f in */logs/*.log; do [ -f "$f" ] && echo "## $f: $(grep -v '^\s*$' "$f" | tail -1 | cut -c1-200)"; done
grep -l -E "Traceback|Error" */logs/*.log logs/*.log 2>/dev/null | while read -r f; do echo "### ERR $f"; grep -E -A3 "Error" "$f" | tail -12; done
for m in */*/base; do [ -f "$m/metrics.jsonl" ] && echo "$m $(tail -1 "$m/metrics.jsonl" | cut -c1-160)"; done
tail -2 logs/smi.log
LANE=/tmp/w bash "$here/keep.sh" pack "$OUT"  # a kept run (KEEP of start-lane.sh) done since the last poll
if ls "$OUT"/keep.tgz.part* > /dev/null 2>&1; then echo "kcache: not packed in this poll (a kept run fills it)"; else
  bash "$here/kcache.sh" pack "$OUT"; fi
tar czf "$OUT/x.tgz" --exclude='*.trace.json*' --exclude='*.safetensors' --exclude='checkpoints' --exclude='*.pt' \
  --exclude='*.bin' -C /tmp w 2>/dev/null
ls -la "$OUT"
