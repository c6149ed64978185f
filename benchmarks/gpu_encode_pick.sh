#!/usr/bin/env bash
# One device call: the staged 2-bit encode's variants (gpu_encode_staged.sh, $V), then the library's defaults end to
# end (gpu_defaults.sh: 32K prefill at 2 and 4 bits, every `gpu` test file) with MILLION_ENCODE_OPT set to the fastest
# variant of $PICK whose encode tests passed (else $FALLBACK). Everything lands in $OUT/all.tgz (the device tool drops
# files past a count). Libraries prebuilt here and carried:
#   ATTN_LIB=.carry/attn.so ENC_LIB=.carry/enc_wg.so OUT=$OUT bash benchmarks/gpu_encode_pick.sh   # carry .carry
set -uo pipefail
R=/tmp/pick; rm -rf $R; mkdir -p $R/enc $R/def
FINAL_OUT=${OUT:-gpu_out}; mkdir -p "$FINAL_OUT"
C='"kernel":"cuda","kind":"mma"'
PICK=${PICK:-"6080 960 1984 4032"}
FALLBACK=${FALLBACK:-6080}
if [ -z "${V:-}" ]; then
  V="[{$C,\"opt\":76}"; for o in $PICK; do V="$V,{$C,\"opt\":$o}"; done; V="$V]"
fi
OUT=$R/enc DEADLINE=${DEADLINE_ENC:-160} NCU=${NCU:-" "} V="$V" bash "$(dirname "$0")/gpu_encode_staged.sh" > $R/enc.log 2>&1
grep -E "^\s+\| 2|passed|failed|rc=" $R/enc.log
BEST=$(python3 - "$R" "$PICK" "$FALLBACK" <<'PY'
import json, sys, glob, re
R, pick, fb = sys.argv[1], [int(o) for o in sys.argv[2].split()], int(sys.argv[3])
log = open(f"{R}/enc.log").read()
ok = re.search(r"tests rc=0", log) is not None
t = {o: [] for o in pick}
for f in glob.glob(f"{R}/enc/st_*.json"):
    for r in json.load(open(f))["rows"]:
        o = r["variant"].get("opt")
        if r["bits"] == 2 and o in t:
            t[o].append(r["ms"])
t = {o: sum(v) / len(v) for o, v in t.items() if v}
best = min(t, key=t.get) if (ok and t) else fb
print(best)
print(f"tests ok: {ok}; mean ms: {t}; picked {best}", file=sys.stderr)
PY
)
echo "MILLION_ENCODE_OPT=$BEST"
MILLION_ENCODE_OPT=$BEST OUT=$R/def DEADLINE=${DEADLINE_DEF:-330} bash "$(dirname "$0")/gpu_defaults.sh" > $R/def.log 2>&1
grep -E "round|^\s+\| [24] \||passed|failed|rc=" $R/def.log
echo "$BEST" > $R/picked.txt
tar czf "$FINAL_OUT/all.tgz" -C $R .
