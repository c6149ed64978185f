"""CPU timing: eager decode steps with MillionCache (recommended recipe, one sink), batch 2 left-padded, with the mask-derived
starts skipped (this commit) vs computed (the old behaviour, by patching attention._reads_starts to True)."""
import statistics, sys, time
import torch
import million.attention as att
from million.cache import MillionCache
from million.codebook import Codebooks
from million.models import load_model
from million.compat import cache_arg

torch.set_num_threads(2)
model, tok = load_model("smollm2", attn_implementation="million")
cb = Codebooks.load(sys.argv[1])
ids = torch.randint(100, 20000, (2, 200))
am = torch.ones(2, 200, dtype=torch.long)
am[1, :37] = 0  # left padding of the second sequence
orig = att._reads_starts
res = {}
for rnd in range(3):
    for name, fn in (("skip", orig), ("old", lambda st: True)):
        att._reads_starts = fn
        cache = MillionCache(cb, model.config)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=am, **cache_arg(model, cache), use_cache=True)
            tok_ = out.logits[:, -1:].argmax(-1)
            m = am
            ts = []
            for step in range(40):
                m = torch.cat([m, torch.ones(2, 1, dtype=m.dtype)], 1)
                t0 = time.perf_counter()
                out = model(input_ids=tok_, attention_mask=m, **cache_arg(model, cache), use_cache=True)
                ts.append(time.perf_counter() - t0)
                tok_ = out.logits[:, -1:].argmax(-1)
        res.setdefault(name, []).append(statistics.median(ts[5:]) * 1e3)
        print(rnd, name, round(res[name][-1], 2), "ms per step", flush=True)
att._reads_starts = orig
print({k: [round(x, 2) for x in v] for k, v in res.items()})
