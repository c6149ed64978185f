set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MILLION_CUDA_LIB=.carry/attn.so MILLION_CUDA_ENCODE_LIB=.carry/enc.so
P="python3 -m pytest -q -p no:cacheprovider -m gpu -rf --tb=short"
for f in test_gpu_eviction test_triton_attention test_triton_encode test_gpu_decode; do
  timeout 200 $P tests/$f.py > /tmp/d_$f.txt 2>&1; echo "$f rc=$?"
  grep -E "^(FAILED|ERROR)|passed|failed" /tmp/d_$f.txt | cut -c1-220 | head -60
  grep -n -m3 -A30 "^_____" /tmp/d_$f.txt | grep -vE "^[0-9]+-\s*$" | head -70 > $OUT/first_$f.txt
done
