#!/usr/bin/env bash
# Adopt a measured PQ_ROT arm (1 or 2) into the library source: apply rot2.patch, set PQ_ROT's default to N, and check
# that the default build's PTX is byte-identical to the measured build's (the patched source with -DPQ_ROT=N), the
# whole file compared. Leaves the tree patched on success; restores it on a mismatch.
# Usage: bash docs/logs/rot_1207/adopt.sh N      (nvcc 13.0; about 3 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${1:?PQ_ROT value: 1 or 2}
case $N in 1|2) ;; *) echo "adopt.sh: PQ_ROT must be 1 or 2, got '$N'" >&2; exit 2;; esac
S=src/million/ops/cuda/pq_attention.cu
git diff --quiet -- "$S" src/million/ops/cuda_attention.py || { echo "adopt.sh: $S or cuda_attention.py has local changes" >&2; exit 2; }
git apply docs/logs/rot_1207/rot2.patch
T=$(mktemp -d)
cp "$S" "$T/measured.cu"
sed -i "s/^#define PQ_ROT 0$/#define PQ_ROT $N/" "$S"
grep -q "^#define PQ_ROT $N$" "$S" || { echo "adopt.sh: no '#define PQ_ROT 0' line to set" >&2; git checkout -- "$S" src/million/ops/cuda_attention.py; exit 1; }
cp "$S" "$T/default.cu"
F="-arch=sm_90 -std=c++17 -ptx"
nvcc $F -DPQ_ROT="$N" -o "$T/measured.ptx" "$T/measured.cu" > "$T/measured.log" 2>&1 &
nvcc $F -o "$T/default.ptx" "$T/default.cu" > "$T/default.log" 2>&1 &
wait || true; [ -s "$T/measured.ptx" ] && [ -s "$T/default.ptx" ] || { echo "adopt.sh: nvcc failed (logs in $T)" >&2; git checkout -- "$S" src/million/ops/cuda_attention.py; exit 1; }
# the PTX names its source file in comments only where -lineinfo is given; compare the whole files
if cmp "$T/measured.ptx" "$T/default.ptx"; then
  echo "adopt.sh: PQ_ROT=$N adopted; PTX byte-identical to the measured build's ($(sha256sum < "$T/default.ptx" | cut -c1-16))"
else
  echo "adopt.sh: PTX differs from the measured build's; source restored" >&2
  git checkout -- "$S" src/million/ops/cuda_attention.py
  exit 1
fi
