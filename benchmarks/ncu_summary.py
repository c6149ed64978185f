"""Summarize an ncu --metrics text report: one line per profiled pq_ kernel (used for docs/logs/decode_v4)."""
import sys
cur = None
rows = []
for line in open(sys.argv[1]):
    if "pq_" in line and "Context" in line:
        cur = {"k": line.strip()[:60]}
        rows.append(cur)
        continue
    p = line.split()
    if cur is not None and len(p) >= 2 and ("__" in p[0]):
        name = p[0].replace("smsp__average_warps_issue_stalled_", "st_").replace("_per_issue_active.ratio", "")
        cur[name] = p[-1]
for r in rows:
    print(" | ".join(f"{k}={v}" for k, v in r.items()))
