# Stage helpers shared by the one-call GPU scripts (gpu_h200.sh, gpu_e2e.sh); source it after setting T0, DEADLINE,
# W and defining pack (called as `pack NAME` after each stage, NAME the stage just run).
# left: seconds before the deadline; tmo CAP: the smaller of CAP and that (at least 1 s)
left() { echo $((T0 + DEADLINE - $(date +%s))); }
tmo() { local l; l=$(left); [ "$l" -lt 1 ] && l=1; [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
stage() { echo "== $1 (t=$(( $(date +%s) - T0 )) s, $(left) s left)" | tee -a "$W/stages.txt"; }
# run NAME CAP CMD...: CMD under timeout, stdout+stderr to $W/NAME.txt, exit status to stages.txt
run() {
  local name=$1 cap=$2; shift 2
  local t; t=$(tmo "$cap"); local s=$(date +%s)
  stage "$name (timeout $t s): $*"
  timeout "$t" "$@" > "$W/$name.txt" 2>&1
  local rc=$?
  echo "   $name rc=$rc in $(( $(date +%s) - s )) s" | tee -a "$W/stages.txt"
  pack "$name"
  return $rc
}
