set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MILLION_CUDA_LIB=.carry/attn.so MILLION_CUDA_ENCODE_LIB=.carry/enc.so
P="python3 -m pytest -q -p no:cacheprovider -rf --tb=short"
s() { local n=$1 t=$2; shift 2; local a=$(date +%s); timeout $t "$@" > $OUT/$n.txt 2>&1; echo "== $n rc=$? in $(( $(date +%s) - a )) s"; grep -E "^(FAILED|ERROR)|passed|failed|triton|warm-up|round|^\| |same lists" $OUT/$n.txt | cut -c1-200 | head -24; }
date -u; git rev-parse HEAD
s gridbench 90 python3 benchmarks/bench_grid_build.py --device cuda --subspaces 2048 --prefilters 64 --triton --skip-torch --launches 4:2:1 --json $OUT/gridbench.json
s prefill4 120 python3 benchmarks/bench_prefill_encode.py --context 32768 --bits 4 --rounds 1 --variants nocache,pq --json $OUT/prefill4.json
s enc_tests 150 $P -m gpu tests/test_cuda_encode.py tests/test_triton_grid.py
s grid_cpu_tests 120 $P tests/test_cuda_encode_grid.py tests/test_triton_grid.py
for c in 1 2 1 2; do
  s cluster$c 60 env MILLION_CUDA_CLUSTER=$c python3 benchmarks/bench_decode_cuda.py --no-triton --skip-check --shapes gqa --batches 1 --contexts 4096,32768 --out $OUT/gqa_c$c.json
  grep -E "^bench gqa" $OUT/cluster$c.txt | cut -c1-120 | head -6
done
