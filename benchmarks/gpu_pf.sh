#!/usr/bin/env bash
# One device call (2026-12-06): the FFMA kernel with the split's first chunks of K and V codes prefetched into L2 before
# griddepcontrol.wait (-DPQ_PF_EARLY, attn_pf.so) against the library (attn_col.so), two rounds; where the variant is
# faster at MHA B=1 32K 4-bit in both rounds by more than 0.5%, its sweep and MillionCache tests in the same call.
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   git show adb68ae:src/million/ops/cuda/pq_attention.cu > /tmp/col.cu; nvcc $F -o .carry/attn_col.so /tmp/col.cu
#   nvcc $F -o .carry/attn_pf.so src/million/ops/cuda/pq_attention.cu   (the prefetch is the default since 4bbcf89;
#   the measured build was f762721's source with -DPQ_PF_EARLY, whose nvcc -ptx output is the same)
# Usage: OUT=$OUT DEADLINE=280 bash benchmarks/gpu_pf.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/pf "${DEADLINE:-280}" .carry/attn_pf.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt"; }
env_txt
sha256sum .carry/*.so | cut -c1-16,66- >> "$W/env.txt"
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
run t_pf 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for r in "" _b; do
  for e in col pf; do
    run "ab_$e$r" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 4096,32768,131072 --batches 1,8 \
      --out "$W/ab_$e$r.json"
  done
done
for e in col pf; do
  run "qop_$e" 20 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 4096,32768 --batches 1 --q-op \
    --out "$W/qop_$e.json"
done
adopt_then_sweep col pf mha:1:32768:4 50 110
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"; tar czf "$OUT/w.tgz" -C "$W" .
