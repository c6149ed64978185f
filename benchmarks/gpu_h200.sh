#!/usr/bin/env bash
# One device call that re-checks and re-measures the current CUDA kernels on a new machine kind (written for the
# H200 baseline, docs/benchmarks.md "H200 baseline"): machine and software, the GPU tests of the CUDA kernels, the
# decode table (bench_decode_cuda.py, B=1 and 8, every shape, 4-bit and 2-bit), the encode benchmark with the
# 32K prefill of the 7B-shaped model, and the device-to-device copy bandwidth. Every stage runs under `timeout`,
# clipped to a global deadline (DEADLINE seconds after the start, default 530), so the whole stays inside one
# 600 s call. Libraries are prebuilt and carried (MILLION_CUDA_LIB, MILLION_CUDA_ENCODE_LIB; nvcc flags as in
# src/million/ops/_nvcc.py); if one does not load there, it is rebuilt there with the same flags.
#
#   OUT=$OUT ATTN_LIB=.carry/attn_h200.so ENC_LIB=.carry/enc_h200.so bash benchmarks/gpu_h200.sh
#
# Everything is written under $W (default /tmp/h200) and packed after every stage into $OUT/h200_baseline.tgz
# (one file, whatever stage the call stops in); summary.txt is also copied to $OUT. The summary is printed last.
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-gpu_out}
W=${W:-/tmp/h200}
DEADLINE=${DEADLINE:-530}
ATTN_LIB=${ATTN_LIB:-.carry/attn_h200.so}
ENC_LIB=${ENC_LIB:-.carry/enc_h200.so}
CONTEXTS=${CONTEXTS:-1024,4096,16384,32768,131072}
mkdir -p "$OUT" "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PY:-python3}

pack() { tar -czf "$OUT/h200_baseline.tgz.tmp" -C "$(dirname "$W")" "$(basename "$W")" 2>/dev/null \
  && mv "$OUT/h200_baseline.tgz.tmp" "$OUT/h200_baseline.tgz"; }
. "$(dirname "$0")/gpu_stages.sh"  # left, tmo, stage, run

# (a) machine and software
stage env
{
  date -u '+%Y-%m-%d %H:%M:%S UTC'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,pstate,clocks.sm,clocks.mem,temperature.gpu --format=csv
  nvidia-smi
  nvcc --version 2>&1 | tail -2
  uname -r
  $PY - <<'EOF'
import torch, triton
p = torch.cuda.get_device_properties(0)
print("torch", torch.__version__, "triton", triton.__version__, "cuda", torch.version.cuda)
print("device", p.name, "cc", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count, "L2", p.L2_cache_size,
      "mem", p.total_memory)
EOF
  cat .carry/h200_commit.txt 2>/dev/null
} > "$W/env.txt" 2>&1

# libraries: load check; rebuild there with the library's flags if the carried one does not load
FLAGS="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90 -Xcompiler -fPIC -shared"
for pair in "ATTN_LIB:pq_attention" "ENC_LIB:pq_encode"; do
  var=${pair%%:*}; src=src/million/ops/cuda/${pair##*:}.cu; lib=${!var}
  if ! $PY -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$lib" >> "$W/env.txt" 2>&1; then
    echo "$lib does not load: rebuilding from $src" | tee -a "$W/env.txt"
    lib=$W/${pair##*:}.so
    timeout "$(tmo 240)" nvcc $FLAGS -o "$lib" "$src" > "$W/build_${pair##*:}.txt" 2>&1 || echo "build of $src failed" | tee -a "$W/env.txt"
    printf -v "$var" %s "$lib"
  fi
  echo "$var=${!var} sha256 $(sha256sum "${!var}" 2>/dev/null | cut -c1-16)" >> "$W/env.txt"
done
export MILLION_CUDA_LIB=$ATTN_LIB MILLION_CUDA_ENCODE_LIB=$ENC_LIB
pack

# (e) device-to-device copy bandwidth (bytes read + written), before anything heats the card
cat > "$W/copy_bw.py" <<'EOF'
import json, statistics, torch
out = {}
for gib in (2, 8):
    n = gib * (1 << 30) // 2
    a = torch.randn(n, device="cuda", dtype=torch.float16)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); b.copy_(a); e1.record(); e1.synchronize()
        ts.append(e0.elapsed_time(e1) * 1e-3)
    assert torch.equal(a[:1 << 20], b[:1 << 20]) and torch.equal(a[-(1 << 20):], b[-(1 << 20):])
    med = statistics.median(ts)
    out[f"{gib}GiB"] = dict(bytes_rw=2 * a.numel() * 2, median_s=med, min_s=min(ts), gbps=2 * a.numel() * 2 / med / 1e9,
                            gbps_best=2 * a.numel() * 2 / min(ts) / 1e9)
    print(f"copy {gib} GiB fp16: median {med * 1e3:.3f} ms -> {out[f'{gib}GiB']['gbps']:.0f} GB/s (read + write), "
          f"best {out[f'{gib}GiB']['gbps_best']:.0f}", flush=True)
    del a, b
    torch.cuda.empty_cache()
import sys
json.dump(out, open(sys.argv[1], "w"), indent=1)
EOF
run copy_bw 60 $PY "$W/copy_bw.py" "$W/copy_bw.json"

# (b) GPU tests of the CUDA kernels against the carried libraries
run tests_attention 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda_attention.py tests/test_gpu_cache.py
run tests_encode 90 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda_encode.py

# (c) decode table, B=1 and 8 (naive-reference check first), then 1M tokens in its own process
run decode 200 $PY benchmarks/bench_decode_cuda.py --no-triton --batches 1,8 --contexts "$CONTEXTS" --out "$W/decode.json"

# (d) encode through the default dispatch ({} first) and the CUDA kernel directly, with the 32K prefill
run encode 150 $PY benchmarks/bench_encode.py --out "$W/encode.json" --variants '[{"kernel":"cuda","opt":12},{}]'

# (c, optional) 1M context: B=1 every shape, B=8 where the fp16 KV cache fits 40 GB (GQA, SmolLM2)
if [ "$(left)" -gt 40 ]; then
  run decode_1m 120 $PY benchmarks/bench_decode_cuda.py --no-triton --skip-check --batches 1,8 --contexts 1048576 \
    --out "$W/decode_1m.json"
else
  stage "decode_1m skipped: $(left) s left"
fi

# (c, optional) B=32 to 32K, if time is left (the H100 table has it)
if [ "$(left)" -gt 90 ]; then
  run decode_b32 150 $PY benchmarks/bench_decode_cuda.py --no-triton --skip-check --batches 32 \
    --contexts 1024,4096,16384,32768 --out "$W/decode_b32.json"
else
  stage "decode_b32 skipped: $(left) s left"
fi

# summary
stage summary
{
  head -1 "$W/env.txt"; sed -n 2,3p "$W/env.txt"; grep -E "^torch|^device|^[A-Z_]+LIB=" "$W/env.txt"
  grep -h "^copy" "$W/copy_bw.txt"
  for f in tests_attention tests_encode; do echo "$f: $(grep -E "passed|failed|error" "$W/$f.txt" | tail -1)"; done
  grep -h "^CHECK" "$W/decode.txt"
  grep -hE "^(shape|mha|gqa|smollm2) " "$W/decode.txt" "$W/decode_1m.txt" "$W/decode_b32.txt" 2>/dev/null
  grep -hE "^check|^encode |^prefill" "$W/encode.txt" | cut -c1-200
  cat "$W/stages.txt"
} > "$W/summary.txt" 2>&1
pack
cp "$W/summary.txt" "$OUT/summary.txt"
cat "$W/summary.txt"
