# Sourced by the lane scripts (speed-lane.sh, vllm-lane.sh): run their steps one after another on one GPU.
#   run_steps OUT_DIR LIMIT PATTERN STEP...
# A STEP is "name|command"; commands joined by ' & ' run side by side. Each step writes under OUT_DIR/<name>/
# (log.txt, or log0.txt, log1.txt, ... for a step of parts), gets LIMIT seconds, and adds to OUT_DIR/steps.txt
# its time, its rc (the worst of its parts) and the last lines of its logs that match PATTERN (grep -E).
# A step that fails does not stop the rest; each command sees OUT=OUT_DIR/<name>.
# DRY=1 prints "name|command" instead and writes nothing (a part as name.0, name.1, ...); ONLY=name1,name2 runs
# those steps alone, in that order. Commands are split into words at blanks, without quotes: keep them to plain words.
run_steps() {
  local out=$1 limit=$2 pattern=$3
  shift 3
  local step name rest k rc t0 pid want
  if [ -n "${ONLY:-}" ]; then  # the named steps, in ONLY's order
    local picked=()
    for want in ${ONLY//,/ }; do
      for step in "$@"; do [ "${step%%|*}" = "$want" ] && picked+=("$step"); done
    done
    set -- "${picked[@]}"
  fi
  for step in "$@"; do
    name=${step%%|*}
    rest=${step#*|}
    local parts=()
    while [[ $rest == *" & "* ]]; do parts+=("${rest%% & *}"); rest=${rest#* & }; done
    parts+=("$rest")
    if [ -n "${DRY:-}" ]; then
      if [ ${#parts[@]} = 1 ]; then echo "$name|${parts[0]}"; else
        for k in "${!parts[@]}"; do echo "$name.$k|${parts[$k]}"; done; fi
      continue
    fi
    mkdir -p "$out/$name"
    t0=$(date +%s)
    local pids=() log
    for k in "${!parts[@]}"; do
      log=$out/$name/log.txt
      [ ${#parts[@]} = 1 ] || log=$out/$name/log$k.txt
      # shellcheck disable=SC2086
      OUT="$out/$name" timeout -k 10 "$limit" ${parts[$k]} > "$log" 2>&1 &
      pids+=($!)
    done
    rc=0
    for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
    echo "$(date -u +%T) $name rc=$rc $(( $(date +%s) - t0 )) s" | tee -a "$out/steps.txt"
    grep -h -E "$pattern" "$out/$name"/log*.txt | tail -8 >> "$out/steps.txt"
  done
}
