#!/usr/bin/env bash
# The command line's default path on the GPU box, end to end, with the real model (two halves, see gpu_quality.sh):
#   bash benchmarks/gpu_quality.sh stash                                          # call 1, carry .qa
#   OUT=$OUT bash benchmarks/gpu_quality.sh exec bash benchmarks/gpu_cli_smoke.sh  # call 2, carry .qb
# For BITS (default "4 2"): `million calibrate` with its defaults (the recommended recipe; timed), `million info`,
# `million generate` (fp16 and the PQ cache through the CUDA kernels), and `million eval ppl` on the codebooks it wrote
# (8 held-out SQuAD windows of 2048 tokens, deployed and all-quantized protocols; fp16 once).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
M="python3 -m million"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader;
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } > "$OUT/env.txt" 2>&1
clean() { tr '\r' '\n' | grep -a -v -E "it/s\]$|s/it\]$|Warning|warn\(|Converting|Loading weights|^\s*$"; }
$M eval ppl --model "$MODEL" --method fp16 --max-windows 8 --device cuda --json "$OUT/ppl_fp16.json" 2>&1 | clean | tail -3
for b in ${BITS:-4 2}; do
  s=$(date +%s.%N)
  $M calibrate --model "$MODEL" --bits "$b" --out "/tmp/cb$b" --force 2>&1 | clean > "$OUT/calibrate$b.log"
  echo "calibrate $b-bit: rc ${PIPESTATUS[0]}, $(python3 -c "import time; print(f'{time.time() - $s:.1f}')") s" | tee -a "$OUT/summary.txt"
  $M info "/tmp/cb$b" > "$OUT/info$b.txt" 2>&1
  $M generate --model "$MODEL" --codebooks "/tmp/cb$b" --residual 16 --max-new-tokens 64 \
    "Explain in two sentences why the sky is blue." > "$OUT/generate$b.txt" 2>&1
  echo "generate $b-bit: rc $?" | tee -a "$OUT/summary.txt"
  for p in deployed all-quantized; do
    $M eval ppl --model "$MODEL" --method pq --bits "$b" --codebooks "/tmp/cb$b" --protocol $p --max-windows 8 --device cuda \
      --json "$OUT/ppl${b}_$p.json" 2>&1 | clean | tail -2
  done
done
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
f = json.loads((out / "ppl_fp16.json").read_text())["ppl"]
print(f"fp16 ppl {f:.4f}")
for p in sorted(out.glob("ppl[0-9]*_*.json")):
    r = json.loads(p.read_text())
    print(f"{p.stem:>20}: ppl {r['ppl']:.4f} ({100 * (r['ppl'] / f - 1):+.2f}%), {r.get('bits_per_element')} bits/element")
PY
