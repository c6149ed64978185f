# Stage helpers shared by the one-call GPU scripts (gpu_h200.sh, gpu_e2e.sh, gpu_prefill.sh, gpu_verify.sh, gpu_starts.sh,
# gpu_grid_frame.sh, gpu_defaults.sh, gpu_encode_wg.sh, gpu_encode_staged.sh). `run` needs T0, DEADLINE, W and a function
# pack (called as `pack NAME` after each stage, NAME the stage just run); gpu_setup sets the first three.
# gpu_setup W DEADLINE ATTN_LIB ENC_LIB: the defaults of $W, $DEADLINE and of the carried libraries ($ATTN_LIB,
# $ENC_LIB); starts the clock, makes $OUT and $W, exports PYTHONPATH and the libraries' variables
gpu_setup() {
  T0=$(date +%s)
  OUT=${OUT:-gpu_out}
  W=${W:-$1}
  DEADLINE=${DEADLINE:-$2}
  mkdir -p "$OUT" "$W"
  export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MILLION_CUDA_LIB=${ATTN_LIB:-$3} MILLION_CUDA_ENCODE_LIB=${ENC_LIB:-$4}
}
# env_txt: the date, the GPU, the commit, the two libraries' hashes, then every carried library's (hash prefix and
# path) into $W/env.txt
env_txt() {
  { date -u '+%Y-%m-%d %H:%M:%S UTC'; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv;
    python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)';
    git rev-parse HEAD 2>/dev/null; sha256sum "$MILLION_CUDA_LIB" "$MILLION_CUDA_ENCODE_LIB" | cut -c1-16;
    sha256sum .carry/*.so 2>/dev/null | cut -c1-16,66-; } > "$W/env.txt" 2>&1
}
# finish_call: the call's total time into the summary; the summary and w.tgz (every output of $W) to $OUT
finish_call() {
  echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"
  cp "$W/stages.txt" "$OUT/"
  tar czf "$OUT/w.tgz" -C "$W" .
}
# left: seconds before the deadline; tmo CAP: the smaller of CAP and that (at least 1 s)
left() { echo $((T0 + DEADLINE - $(date +%s))); }
tmo() { local l; l=$(left); [ "$l" -lt 1 ] && l=1; [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
stage() { echo "== $1 (t=$(( $(date +%s) - T0 )) s, $(left) s left)" | tee -a "$W/stages.txt"; }
# run NAME CAP CMD...: CMD under timeout, stdout+stderr to $W/NAME.txt, exit status to stages.txt
run() {
  local name=$1 cap=$2; shift 2
  local t; t=$(tmo "$cap"); local s=$(date +%s)
  stage "$name (timeout $t s): $*"
  timeout "$t" "$@" > "$W/$name.txt" 2>&1
  local rc=$?
  echo "   $name rc=$rc in $(( $(date +%s) - s )) s" | tee -a "$W/stages.txt"
  pack "$name"
  return $rc
}
# pack_lines NAME PATTERN: the lines of stage NAME's output that match PATTERN (its last 8 lines when PATTERN is empty)
# into the summary; then the summary, env.txt and the JSONs of $W to $OUT (few files: the device tool drops files past
# a count). A script's `pack` can be just this.
pack_lines() {
  if [ -n "$2" ]; then grep -E "$2" "$W/$1.txt" | cut -c1-220; else tail -8 "$W/$1.txt"; fi | sed 's/^/   /' >> "$W/stages.txt"
  cp "$W"/stages.txt "$W"/env.txt "$OUT"/ 2>/dev/null; cp "$W"/*.json "$OUT"/ 2>/dev/null
}
# pack_tgz NAME PATTERN: the lines of stage NAME's output that match PATTERN into the summary, then only stages.txt,
# env.txt and w.tgz (every output and JSON of $W) to $OUT: the device tool returns at most 8 files
pack_tgz() {
  grep -E "$2" "$W/$1.txt" | cut -c1-220 | sed 's/^/   /' >> "$W/stages.txt"
  cp "$W/stages.txt" "$W/env.txt" "$OUT/" 2>/dev/null
  tar czf "$OUT/w.tgz" -C "$W" . 2>/dev/null
}
# sweep_all CAP: bench_decode_cuda.py against $MILLION_CUDA_LIB, every shape, 4K-128K, B=1 and 8, 4 and 2 bits, plain
# and --q-op ($W/sweep.json, $W/sweep_qop.json)
SWEEP_CMD="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2
  --contexts 4096,16384,32768,131072 --batches 1,8"
sweep_all() {
  run sweep "$1" $SWEEP_CMD --out "$W/sweep.json"
  run sweep_qop "$1" $SWEEP_CMD --q-op --out "$W/sweep_qop.json"
}
# sweep_one CAP: the plain sweep only ($W/sweep.json)
sweep_one() { run sweep "$1" $SWEEP_CMD --out "$W/sweep.json"; }
# passed NAME: stage NAME's pytest output reports passes and no failure or error (the gate before an A/B)
passed() { [ "$(grep -c ' failed\|error' "$W/$1.txt")" = 0 ] && grep -q ' passed' "$W/$1.txt"; }
# cache_tests CAP: the MillionCache, decode-loop and eviction GPU tests against $MILLION_CUDA_LIB
cache_tests() {
  run t_cache "$1" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py tests/test_gpu_decode.py \
    tests/test_gpu_eviction.py
}
# adopt_then_sweep BASE VARIANT CELL [SWEEP_CAP CACHE_CAP]: the A/B scripts' decision rule (benchmarks/ab_adopt.py on
# $W/ab_BASE*.json and $W/ab_VARIANT*.json at CELL, two rounds; with $GUARD set, also no cell slower by more than that
# fraction in both rounds); where it adopts, sweep_all and cache_tests
adopt_then_sweep() {
  rm -f "$W/adopt"  # (a failed run must not leave an earlier decision to read)
  run adopt 10 python3 benchmarks/ab_adopt.py "$W" "$1" "$2" --cell "$3" ${GUARD:+--guard "$GUARD"}
  [ "$(cat "$W/adopt" 2>/dev/null)" = 1 ] || return 0
  sweep_all "${4:-50}"
  cache_tests "${5:-120}"
}
# adopt_arm ARM CELL: one arm of a multi-arm A/B (gpu_ta2.sh, gpu_gqa7.sh, gpu_next8.sh) against "lib" by ab_adopt.py's
# rule at CELL (margin and guard 1%, two rounds), its decision kept as $W/adopt_ARM for ab_take.py; a decision that
# did not run leaves no file (no arm inherits the one before it)
adopt_arm() {
  rm -f "$W/adopt"
  run "adopt_$1" 10 python3 benchmarks/ab_adopt.py "$W" lib "$1" --cell "$2" --margin 0.01 --guard 0.01
  cp "$W/adopt" "$W/adopt_$1" 2>/dev/null
}
# gate_arms ARM...: the tensor-core kernel tests (tests/test_cuda_attention.py, -k "mma or test_matches_naive or
# back_to_back or graph_replay") on each arm's .carry/attn_ARM.so; the arms whose tests passed into $GATED (the gate
# before an A/B: gpu_next15.sh-gpu_next18.sh)
gate_arms() {
  GATED=""
  local e
  for e in "$@"; do
    run "t_$e" 60 env MILLION_CUDA_LIB=".carry/attn_$e.so" python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_attention.py -k "mma or test_matches_naive or back_to_back or graph_replay"
    if passed "t_$e"; then GATED="$GATED $e"; fi
  done
}
# ab_rounds ARM...: two rounds of the GQA and SmolLM2 cells (4K-128K, B=1 and 8, 4 and 2 bits), in each the library
# ($MILLION_CUDA_LIB, $W/ab_lib[_b].json) and then every arm (.carry/attn_ARM.so, $W/ab_ARM[_b].json); then each arm's
# decision at GQA B=1 32K 4-bit (adopt_arm)
AB_CMD="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2
  --contexts 4096,16384,32768,131072 --batches 1,8"
ab_rounds() {
  local r e
  for r in "" _b; do
    run "ab_lib$r" 40 $AB_CMD --out "$W/ab_lib$r.json"
    for e in "$@"; do
      run "ab_$e$r" 40 env MILLION_CUDA_LIB=".carry/attn_$e.so" $AB_CMD --out "$W/ab_$e$r.json"
    done
  done
  for e in "$@"; do adopt_arm "$e" gqa:1:32768:4; done
}
# trace_arms ARM...: timelines of GQA B=1 32K, 4 and 2 bits (trace_decode.py, graph replay, 5 reps) on the library's
# trace build (.carry/attn_trace12.so, $W/trace_lib.json) and on each arm's (.carry/attn_ARM_trace.so)
trace_arms() {
  local C="--case gqa:1:4:32768 --case gqa:1:2:32768" e
  run trace_lib 30 env MILLION_CUDA_LIB=.carry/attn_trace12.so python3 benchmarks/trace_decode.py --graph --reps 5 $C \
    --out "$W/trace_lib.json"
  for e in "$@"; do
    run "trace_$e" 30 env MILLION_CUDA_LIB=".carry/attn_${e}_trace.so" python3 benchmarks/trace_decode.py --graph \
      --reps 5 $C --out "$W/trace_$e.json"
  done
}
# ab_two BASE ARM CAP "ENV..." CMD...: two rounds of CMD (a bench_decode_cuda.py command line), each as BASE (the
# environment as it is) then as ARM (with ENV, e.g. MILLION_CUDA_LIB=.carry/attn_ARM.so), into $W/ab_BASE[_b].json
# and $W/ab_ARM[_b].json, the files ab_adopt.py reads (gpu_next26.sh, gpu_next27.sh)
ab_two() {
  local base=$1 arm=$2 cap=$3 envs=$4 r
  shift 4
  for r in "" _b; do
    run "ab_$base$r" "$cap" "$@" --out "$W/ab_$base$r.json"
    run "ab_$arm$r" "$cap" env $envs "$@" --out "$W/ab_$arm$r.json"
  done
}
# taken ARM: adopt_arm's decision for ARM was to take it
taken() { [ "$(cat "$W/adopt_$1" 2>/dev/null)" = 1 ]; }
# on_arm ARM: the sweep and the MillionCache tests on .carry/attn_ARM.so, then $MILLION_CUDA_LIB as it was
on_arm() {
  local lib=$MILLION_CUDA_LIB
  export MILLION_CUDA_LIB=".carry/attn_$1.so"
  sweep_one 60
  cache_tests 100
  export MILLION_CUDA_LIB=$lib
}
# arm_call ARM: the one-arm call of gpu_next17.sh, gpu_next18.sh and gpu_next20.sh: gate_arms; ab_rounds; where the
# arm is taken (adopt_arm), the sweep and the MillionCache tests on it
arm_call() {
  gate_arms "$1"
  [ -n "$GATED" ] || return 0
  ab_rounds "$1"
  if taken "$1"; then on_arm "$1"; fi
}
# arms_call ARM...: the multi-arm call of gpu_next15.sh and gpu_next16.sh: gate_arms; ab_rounds over the arms that
# passed; of those taken the lowest total (ab_take.py, $W/take); the timelines of the library and of every arm that
# passed (trace_arms); then the sweep and the MillionCache tests on the arm taken
arms_call() {
  gate_arms "$@"
  [ -n "$GATED" ] || return 0
  ab_rounds $GATED
  run take 10 python3 benchmarks/ab_take.py "$W" $GATED
  local take
  take=$(cat "$W/take" 2>/dev/null || echo none)
  trace_arms $GATED
  if [ "$take" != none ]; then on_arm "$take"; fi
}
# kmma_cells: gpu_kmma.sh's question (gpu_kmma.sh, gpu_next9.sh): `auto` against MILLION_CUDA_KERNEL=mma over the GQA cells
# of both widths at 16K-128K, B=1 and 8, two rounds interleaved, against $MILLION_CUDA_LIB; the `cells` stage prints
# "slower: CELL" for each cell where auto is slower than mma by more than 1% in both rounds (ab_adopt.py with the
# bases swapped and its guard at 1%; its "adopt" line is not the decision)
kmma_cells() {
  local K="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa --contexts 16384,32768,131072 --batches 1,8"
  local r
  for r in "" _b; do
    run "ab_auto$r" 40 $K --out "$W/ab_auto$r.json"
    run "ab_mma$r" 40 env MILLION_CUDA_KERNEL=mma $K --out "$W/ab_mma$r.json"
  done
  run cells 10 python3 benchmarks/ab_adopt.py "$W" mma auto --cell gqa:8:32768:4 --margin -0.9 --guard 0.01
}
# lib_arm_call W DEADLINE ARM: the whole one-arm call of gpu_next20.sh to gpu_next22.sh against the library build
# .carry/attn_lib14.so (with .carry/enc_wg.so): env.txt, arm_call ARM, finish_call; the summary keeps the kernel tests'
# results, the B=1 32K GQA and SmolLM2 lines, the decision and the slower cells
lib_arm_call() {
  gpu_setup "$1" "$2" .carry/attn_lib14.so .carry/enc_wg.so
  pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=32768|^adopt|^slower|FAIL|gqa:1:"; }
  env_txt
  arm_call "$3"
  finish_call
}
