#!/usr/bin/env bash
# The two prepared A/B calls of 2026-12-06 in one device call (one machine start instead of two): gpu_nw4.sh (20 or 24
# warps per block in the 2-bit MHA kernel), then gpu_winp2.sh (the residual window as a separate 2-bit kernel
# instance). Each writes its own stages.txt, env.txt and w.tgz under $OUT/nw4 and $OUT/wq; their headers hold the
# builds (carry .carry: attn_fin2.so, attn_nw20.so, attn_nw24.so, attn_wp2.so, enc_wg.so) and the decision rules.
# Usage: OUT=$OUT bash benchmarks/gpu_next.sh      (about 330 s)
set -uo pipefail
d=$(dirname "$0")
OUT=$OUT/nw4 W=/tmp/nw4 DEADLINE=190 bash "$d/gpu_nw4.sh"
OUT=$OUT/wq W=/tmp/wq DEADLINE=140 bash "$d/gpu_winp2.sh"
