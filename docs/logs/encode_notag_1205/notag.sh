export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MILLION_CUDA_LIB=.carry/attn.so
date -u
V='[{"kernel":"cuda","kind":"mma"}]'
for r in 1 2; do
  for lib in enc enc_notag; do
    echo "== $lib round $r"
    MILLION_CUDA_ENCODE_LIB=.carry/$lib.so timeout 90 python3 benchmarks/bench_encode.py --no-prefill --prefill-ms 1431 \
      --variants "$V" --out $OUT/${lib}_$r.json 2>&1 | grep -E "^encode 2b|^check" | cut -c1-240
  done
done
