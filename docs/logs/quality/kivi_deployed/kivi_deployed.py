"""KIVI deployed on SmolLM2, 8 held-out SQuAD windows of 2048 (CPU, float32): values on KIVI's own sliding schedule
(the harness since 5d48676) and, for comparison in the same process, the values on the keys' block schedule (before)."""
import json, sys, time
import torch
from million.models import load_model, resolve_model
from million.data import load_text
from million.eval.methods import KIVI
from million.eval.ppl import default_offset, perplexity

torch.set_num_threads(2)
model, tok = load_model(resolve_model("smollm2"), dtype=torch.float32, device="cpu")
ids = tok(load_text("squad"), return_tensors="pt", add_special_tokens=False).input_ids[0]
rows = []
for bits, blocky in ((2, False), (2, True), (4, False)):
    m = KIVI(bits)
    if blocky:
        m.fp_start_v = m.fp_start
    t0 = time.time()
    r = perplexity(model, ids, m, "deployed", 2048, 8, default_offset("squad"), "squad", None)
    r.update(values="block (before)" if blocky else "sliding (KIVI)", seconds=time.time() - t0)
    rows.append(r)
    print(f"KIVI-{bits} deployed, values {r['values']}: ppl {r['ppl']:.4f}, {r['bits_per_element']:.3f} / "
          f"{r['bits_per_element_32k']:.3f} bits, {r['seconds']:.0f} s", flush=True)
json.dump(rows, open(sys.argv[1], "w"), indent=2, default=str)
