export PYTHONPATH=src
MILLION_CUDA_LIB=.carry/attn_v17.so timeout 200 python3 -m pytest -q -m gpu tests/test_cuda_attention.py tests/test_gpu_cache.py -p no:cacheprovider -x > $OUT/t_attn.txt 2>&1; tail -3 $OUT/t_attn.txt
MILLION_CUDA_L2PF=-1 MILLION_CUDA_LIB=.carry/attn_v17.so timeout 120 python3 -m pytest -q -m gpu tests/test_cuda_attention.py -p no:cacheprovider -x > $OUT/t_attn_pf.txt 2>&1; tail -2 $OUT/t_attn_pf.txt
SKIP_TESTS=1 BENCH_TIME=100 BENCH_ARGS="--batches 1 --contexts 4096,32768 --shapes mha,gqa,smollm2" OUT=$OUT bash benchmarks/gpu_decode_ab.sh v16@PYTHONPATH=.carry/old_src@.carry/attn_v16.so pf0@MILLION_CUDA_L2PF=0@.carry/attn_v17.so pf32k@MILLION_CUDA_L2PF=32768@.carry/attn_v17.so pf128k@MILLION_CUDA_L2PF=131072@.carry/attn_v17.so pfall@MILLION_CUDA_L2PF=-1@.carry/attn_v17.so > /dev/null 2>&1
grep -E "^==|^(mha|gqa|smollm2) " $OUT/bench.txt | head -90
