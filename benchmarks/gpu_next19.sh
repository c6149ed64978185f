#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 11:00 UTC), after gpu_next18.sh (10:53 UTC, H100): win (32-token window code
# loads, -DPQ_WIN=1) was faster at 24 of the 32 GQA and SmolLM2 cells by more than 1% in at least one round and more
# than 1% slower at none in both, but at the deciding cell, GQA B=1 32K 4-bit, by 1.7% in round 1 and 0.4% in round 2:
# not taken by that rule. This call re-measures that cell alone, with a rule written before it runs:
# four rounds, the two libraries' order alternating (lib first in rounds 1 and 3, win first in 2 and 4); win is taken if
# it is faster by more than 0.5% in every round and by more than 1% on the mean of the four. The guard of gpu_next18.sh
# (no GQA or SmolLM2 cell more than 1% slower in both rounds) was met there and stands. If taken: the MillionCache,
# decode-loop and eviction GPU tests on win, then the library's sweep on it.
# Builds: as gpu_next18.sh (.carry/attn_mkv.so = the library, .carry/attn_win.so).
# Usage: OUT=$OUT DEADLINE=250 bash benchmarks/gpu_next19.sh   (the working tree with win.patch's Python and test parts
#        applied; carry .carry/attn_mkv.so, attn_win.so, enc_wg.so; about 200 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next19 "${DEADLINE:-250}" .carry/attn_mkv.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench gqa B=1 ctx=32768|^take|^round|^mean"; }
env_txt
git apply --include='src/million/ops/cuda_attention.py' --include='tests/test_cuda_attention.py' \
  docs/logs/mp8_1207/win.patch 2>/dev/null || true
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4 --skip-check --shapes gqa --contexts 32768 --batches 1"
for r in 1 2 3 4; do
  if [ $((r % 2)) = 1 ]; then order="lib win"; else order="win lib"; fi
  for e in $order; do
    if [ "$e" = lib ]; then L=.carry/attn_mkv.so; else L=.carry/attn_win.so; fi
    run "r${r}_$e" 30 env MILLION_CUDA_LIB=$L $B --out "$W/r${r}_$e.json"
  done
done
run decide 10 python3 - "$W" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
t = lambda n: json.loads((d / f"{n}.json").read_text())["bench"][0]["cuda_us"]
lib = [t(f"r{r}_lib") for r in (1, 2, 3, 4)]
win = [t(f"r{r}_win") for r in (1, 2, 3, 4)]
for r, (a, b) in enumerate(zip(lib, win), 1):
    print(f"round {r}: lib {a:.2f} us, win {b:.2f} us, {100 * (b / a - 1):+.2f}%")
m = sum(win) / sum(lib)
print(f"mean: lib {sum(lib) / 4:.2f} us, win {sum(win) / 4:.2f} us, {100 * (m - 1):+.2f}%")
take = all(b < 0.995 * a for a, b in zip(lib, win)) and m < 0.99
print("take", take)
(d / "take").write_text("1" if take else "0")
PY
if [ "$(cat "$W/take" 2>/dev/null)" = 1 ]; then
  export MILLION_CUDA_LIB=.carry/attn_win.so
  cache_tests 100
  run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 \
    --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
fi
finish_call
