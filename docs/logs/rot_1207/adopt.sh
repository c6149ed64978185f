#!/usr/bin/env bash
# Adopt a measured arm into the library source: apply the patch, set the macro's default to N, and check that the
# default build's PTX is byte-identical to the measured build's (the patched source with -DMACRO=N), the whole file
# compared. Leaves the tree patched on success; restores it on a mismatch.
# Usage: bash docs/logs/rot_1207/adopt.sh N                  (PQ_ROT, rot2.patch; nvcc 13.0; about 3 min on 2 cores)
#        MACRO=PQ_ROT4 PATCH=rot4.patch bash docs/logs/rot_1207/adopt.sh 1
#        MACRO=PQ_SWP PATCH=../swp_1207/swp.patch bash docs/logs/rot_1207/adopt.sh 1   (once PQ_SWP is measured and taken)
set -euo pipefail
cd "$(dirname "$0")/../../.."
MACRO=${MACRO:-PQ_ROT}
PATCH=${PATCH:-rot2.patch}
N=${1:?$MACRO value}
case $MACRO:$N in PQ_ROT:1|PQ_ROT:2|PQ_ROT4:1|PQ_SWP:1) ;; *) echo "adopt.sh: $MACRO=$N is not an arm it knows (PQ_ROT 1 or 2, PQ_ROT4 1, PQ_SWP 1)" >&2; exit 2;; esac
S=src/million/ops/cuda/pq_attention.cu
git diff --quiet -- "$S" src/million/ops/cuda_attention.py || { echo "adopt.sh: $S or cuda_attention.py has local changes" >&2; exit 2; }
git apply "docs/logs/rot_1207/$PATCH"
T=$(mktemp -d)
cp "$S" "$T/measured.cu"
sed -i "s/^#define $MACRO 0$/#define $MACRO $N/" "$S"
grep -q "^#define $MACRO $N$" "$S" || { echo "adopt.sh: no '#define $MACRO 0' line to set" >&2; git checkout -- "$S" src/million/ops/cuda_attention.py; exit 1; }
cp "$S" "$T/default.cu"
F="-arch=sm_90 -std=c++17 -ptx"
nvcc $F -D"$MACRO"="$N" -o "$T/measured.ptx" "$T/measured.cu" > "$T/measured.log" 2>&1 &
nvcc $F -o "$T/default.ptx" "$T/default.cu" > "$T/default.log" 2>&1 &
wait || true; [ -s "$T/measured.ptx" ] && [ -s "$T/default.ptx" ] || { echo "adopt.sh: nvcc failed (logs in $T)" >&2; git checkout -- "$S" src/million/ops/cuda_attention.py; exit 1; }
# the PTX names its source file in comments only where -lineinfo is given; compare the whole files
if cmp "$T/measured.ptx" "$T/default.ptx"; then
  echo "adopt.sh: $MACRO=$N adopted; PTX byte-identical to the measured build's ($(sha256sum < "$T/default.ptx" | cut -c1-16))"
else
  echo "adopt.sh: PTX differs from the measured build's; source restored" >&2
  git checkout -- "$S" src/million/ops/cuda_attention.py
  exit 1
fi
