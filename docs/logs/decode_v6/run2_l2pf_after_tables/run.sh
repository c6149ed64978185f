export PYTHONPATH=src
MILLION_CUDA_L2PF=-1 MILLION_CUDA_LIB=.carry/attn_v18.so timeout 150 python3 -m pytest -q -m gpu tests/test_cuda_attention.py -p no:cacheprovider -x > $OUT/t_attn_pf.txt 2>&1; tail -2 $OUT/t_attn_pf.txt
SKIP_TESTS=1 BENCH_TIME=100 BENCH_ARGS="--batches 1 --contexts 4096,32768 --shapes mha,gqa,smollm2" OUT=$OUT bash benchmarks/gpu_decode_ab.sh pf0@MILLION_CUDA_L2PF=0@.carry/attn_v18.so pf16k@MILLION_CUDA_L2PF=16384@.carry/attn_v18.so pf64k@MILLION_CUDA_L2PF=65536@.carry/attn_v18.so pfall@MILLION_CUDA_L2PF=-1@.carry/attn_v18.so pf0b@MILLION_CUDA_L2PF=0@.carry/attn_v18.so > /dev/null 2>&1
grep -E "^==|^(mha|gqa|smollm2) " $OUT/bench.txt | head -90
