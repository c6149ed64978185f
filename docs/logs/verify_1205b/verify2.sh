set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MILLION_CUDA_LIB=.carry/attn.so MILLION_CUDA_ENCODE_LIB=.carry/enc.so
P="python3 -m pytest -q -p no:cacheprovider -rf --tb=short"
s() { local n=$1 t=$2; shift 2; local a=$(date +%s); timeout $t "$@" > /tmp/v_$n.txt 2>&1; echo "== $n rc=$? in $(( $(date +%s) - a )) s"; grep -E "^(FAILED|ERROR)|passed|failed" /tmp/v_$n.txt | cut -c1-220 | head -20; grep -n -m2 -A25 "^_____" /tmp/v_$n.txt | head -50 > $OUT/first_$n.txt; }
s decode 120 $P -m gpu tests/test_gpu_decode.py
s grid 150 $P tests/test_triton_grid.py tests/test_cuda_encode_grid.py
s gpu 330 $P -m gpu tests/test_cuda_encode.py tests/test_cuda_attention.py tests/test_gpu_cache.py tests/test_gpu_eviction.py tests/test_triton_attention.py tests/test_triton_encode.py tests/test_triton_grid.py tests/test_gpu_decode.py
