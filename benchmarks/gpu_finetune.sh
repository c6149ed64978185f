#!/usr/bin/env bash
# Codebook tuning on the GPU box (SmolLM2 travels in two halves, see gpu_quality.sh):
#   bash benchmarks/gpu_quality.sh stash                                    # call 1, carry .qa
#   OUT=$OUT bash benchmarks/gpu_quality.sh exec bash benchmarks/gpu_finetune.sh   # call 2, carry .qb
# Runs benchmarks/quality_finetune.py for the default 4-bit and 2-bit recipes (k-means on 32,768 SQuAD
# tokens in 8K windows, tuning on 2048-token SQuAD windows before token 65,536, scoring on 8 held-out
# SQuAD windows and 8 essay windows), each within its share of FTIME seconds. FT4/FT2 override the
# tuning configs (quality_finetune.py --configs); FT2S/FT2S_TIME run the served 2-bit recipe (off unless
# FT2S_TIME > 30); a share of 0 skips a job. FT_EXTRA: more quality_finetune.py arguments for every job
# (e.g. "--needle-contexts 1024,2048,4096,8192 --needle-protocol deployed").
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader;
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
end=$(( $(date +%s) + ${FTIME:-540} ))
run() {  # name share_seconds args...
  local name=$1 share=$2; shift 2
  local left=$(( end - $(date +%s) )); [ "$share" -lt "$left" ] && left=$share
  [ "$left" -gt 30 ] || { echo "no time left for $name"; return; }
  timeout "$left" python3 benchmarks/quality_finetune.py --model "$MODEL" --device cuda --threads 16 \
    --calib-tokens 32768 --calib-window 8192 --ft-window 2048 --squad-windows 8 --essays-windows 8 \
    --time-budget $(( left * 6 / 10 )) --out "$OUT/$name.json" "$@" ${FT_EXTRA:-} 2>&1 \
    | tr '\r' '\n' | grep -a -v -E "Warning|warn\(|Converting|Loading|calibration pass|tuning codebooks|forward_call" | tee -a "$OUT/$name.log"
}
run ft4 ${FT4_TIME:-300} --recipe best --bits 4 --configs "${FT4:-lr=2e-3,steps=120;lr=5e-3,steps=120;lr=1e-2,steps=120}"
run ft2s ${FT2S_TIME:-0} --recipe served --bits 2 --configs "${FT2S:-lr=5e-3,steps=300}"
run ft2 ${FT2_TIME:-300} --recipe best --bits 2 --configs "${FT2:-lr=5e-3,steps=120;lr=1e-2,steps=120}"
