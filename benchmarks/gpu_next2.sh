#!/usr/bin/env bash
# Three prepared A/B calls in one device call (one machine start): gpu_p8.sh (lookup addresses by one byte permute in the
# MHA kernel, both widths), gpu_nw4.sh (20 or 24 warps per block in the 2-bit MHA kernel), gpu_winp2.sh (the residual
# window as a separate 2-bit kernel instance). Each writes its own stages.txt, env.txt and w.tgz under $OUT/p8, $OUT/nw4
# and $OUT/wq; their headers hold the builds (carry .carry: attn_fin2.so, attn_p8.so, attn_nw20.so, attn_nw24.so,
# attn_wp2.so, enc_wg.so) and the decision rules, written before the run.
# Usage: OUT=$OUT bash benchmarks/gpu_next2.sh      (about 520 s)
set -uo pipefail
d=$(dirname "$0")
OUT=$OUT/p8 W=/tmp/p8 DEADLINE=215 bash "$d/gpu_p8.sh"
OUT=$OUT/nw4 W=/tmp/nw4 DEADLINE=170 bash "$d/gpu_nw4.sh"
OUT=$OUT/wq W=/tmp/wq DEADLINE=125 bash "$d/gpu_winp2.sh"
