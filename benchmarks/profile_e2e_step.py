"""Profile MillionCache decode steps of a 7B-shaped LLaMA (random weights, fp16, few layers) at a
long context: where does a step's time go? Prints the top ops by CUDA and by CPU time.

    PYTHONPATH=src python3 benchmarks/profile_e2e_step.py --context 32768 --layers 4
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    import million
    from million import MillionCache, PQConfig
    from million.codebook import Codebooks, model_identity
    from million.compat import cache_arg

    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=args.layers,
                      num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=131072)
    million.register()
    cfg._attn_implementation = "million"
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    pq = PQConfig.from_bits(128, 4, nbits=8, granularity="layer_head")
    shape = (args.layers, 32, pq.M, pq.ksub, pq.dsub)
    cb = Codebooks(pq, torch.randn(shape, device="cuda"), torch.randn(shape, device="cuda"), model_identity(cfg))
    cache = MillionCache(cb, cfg)
    tok = torch.randint(0, 32000, (1, 1), device="cuda")
    with torch.no_grad():
        model(input_ids=torch.randint(0, 32000, (1, args.context), device="cuda"), **cache_arg(model, cache), use_cache=True, logits_to_keep=1)
        for _ in range(4):
            model(input_ids=tok, **cache_arg(model, cache), use_cache=True)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                model(input_ids=tok, **cache_arg(model, cache), use_cache=True)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
