export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MILLION_CUDA_LIB=.carry/attn.so MILLION_CUDA_ENCODE_LIB=.carry/enc.so
date -u
timeout 60 python3 benchmarks/bench_grid_build.py --device cuda --subspaces 2048 --prefilters 64 --triton --skip-torch --launches 4:2:1 --json $OUT/gridbench.json 2>&1 | tail -3
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_encode_grid.py 2>&1 | tail -1
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_triton_grid.py -k "gauss or line" 2>&1 | tail -1
