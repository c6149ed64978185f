"""The ``million`` command line: calibrate codebooks, generate with a PQ cache, inspect codebooks,
and evaluate quality. Libraries return values; this module does the I/O."""

from __future__ import annotations

import argparse
import sys
import time

GRANULARITIES = ("merged", "layer", "layer_head")
ROTATIONS = ("none", "balanced", "balanced-keys")
TRANSFORMS = ("none", "metric", "hadamard")
RECIPES = ("recommended", "plain")  # million.calibrate.RECIPES (not imported here: it pulls in torch)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _dtype(name: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"--dtype {name!r} is not one of {sorted(table)}")
    return table[name]


_EVICTION_OPTIONS = ("recent", "observe", "pool", "pool_side", "pool_share")


def _eviction_options(args) -> tuple[dict, list[str]]:
    """The eviction rule's options on the command line (``million.Eviction``'s, but ``keep``) as keyword arguments, and
    the flags among them given away from the rule's defaults."""
    import dataclasses

    from .config import Eviction

    default = {f.name: f.default for f in dataclasses.fields(Eviction)}
    kw = {name: getattr(args, name) for name in _EVICTION_OPTIONS}
    return kw, ["--" + name.replace("_", "-") for name, v in kw.items() if v != default[name]]


def _device(name: str | None) -> str:
    import torch

    if name is None or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for, but no CUDA GPU is available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device {name!r} is not one of cpu, cuda, cuda:N, auto")
    return name


def _int_arg(ok, message):
    """An argparse type: an integer for which ``ok(v)``, else an error ``message(s)`` naming the value given."""
    def conv(s):
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(message(s))
        return v

    return conv


def _int_at_least(name, lo: int, what: str):
    return _int_arg(lambda v: v >= lo, lambda s: f"{name} must be a {what} integer, got {s!r}")


def _int_range(name, lo: int, hi: int):
    return _int_arg(lambda v: lo <= v <= hi, lambda s: f"{name} {s!r} is out of range; allowed: integers {lo}..{hi}")


def _positive(name):
    return _int_at_least(name, 1, "positive")


def _nonnegative(name):
    return _int_at_least(name, 0, "non-negative")


def cmd_calibrate(args) -> int:
    import torch

    from .calibrate import calibrate
    from .config import PQConfig
    from .data import load_text
    from .models import load_model, resolve_model

    src = resolve_model(args.model)
    device = _device(args.device)
    from pathlib import Path

    from transformers import AutoConfig

    # validate everything cheap before the slow work (text download, model load)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file, not a directory; give a directory path")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ValueError(f"--out {args.out} exists and is not empty; pass --force to overwrite")
    from .calibrate import resolve_recipe

    r = resolve_recipe(args.recipe, granularity=args.granularity, sinks=args.sinks, transform=args.transform,
                       rotation=args.rotation, pre_rope=args.pre_rope, cli=True)
    if args.finetune_steps and args.pre_rope:
        raise ValueError(f"--finetune-steps {args.finetune_steps} tunes post-RoPE codebooks; drop --pre-rope or --finetune-steps")
    if not args.finetune_lr > 0:
        raise ValueError(f"--finetune-lr must be > 0, got {args.finetune_lr}")
    cfg = AutoConfig.from_pretrained(src.path, **src.kwargs())
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    pq = PQConfig.from_bits(head_dim, args.bits, nbits=args.nbits, granularity=r["granularity"], residual_length=args.residual,
                            sink_length=r["sinks"])
    if args.samples < pq.ksub:
        raise ValueError(f"--samples {args.samples} is fewer than the {pq.ksub} centroids of a {pq.nbits}-bit codebook; "
                         f"allowed: at least {pq.ksub}")
    text = load_text(args.text)
    if not text.strip():
        raise ValueError(f"--text {args.text}: the text is empty")
    torch.manual_seed(args.seed)
    t0 = time.time()
    # tuning back-propagates through the model: float32 there (fp16 gradients of the small centroid steps underflow)
    dtype = torch.float32 if device == "cpu" or args.finetune_steps else torch.float16
    model, tok = load_model(src, dtype=dtype, device=device)
    window = args.window or min(8192, getattr(model.config, "max_position_embeddings", None) or 8192)
    if args.finetune_steps:  # the library checks this too; here first, so that the error is the only line
        from .calibrate import tuning_windows

        ft_window = min(args.finetune_window, window)
        if not tuning_windows(tok, text, args.tokens, ft_window):
            raise ValueError(f"--finetune-steps needs at least one full {ft_window}-token window of calibration text; "
                             f"raise --tokens ({args.tokens}) or lower --finetune-window")
    print(f"calibrating {src.name} ({args.recipe} recipe): {pq.M} subspaces x {pq.dsub} dims, {pq.nbits}-bit codes = "
          f"{pq.bits_per_element:g} bits/element, {pq.granularity} codebooks, {pq.sink_length} sink(s), transform "
          f"{r['transform']}, rotation {r['rotation']}, on {args.tokens} tokens of {args.text}", file=sys.stderr)
    cb = calibrate(model, tok, text, config=pq, tokens=args.tokens, window=window, samples=args.samples, iters=args.iters,
                   seed=args.seed, pre_rope=args.pre_rope, text_name=args.text, model_name=src.name, recipe=args.recipe,
                   transform=r["transform"], rotation=r["rotation"], finetune_steps=args.finetune_steps,
                   finetune_lr=args.finetune_lr, finetune_window=args.finetune_window)
    ft = cb.calibration.get("finetune")
    if ft:
        print(f"tuned the centroids: {ft['steps']} steps on {ft['windows']} windows of {ft['window']} tokens, "
              f"KL to the unquantized model {ft['loss_first']:.4g} -> {ft['loss_last']:.4g} ({ft['seconds']:.0f} s)",
              file=sys.stderr)
    cb.save(out)
    print(cb.describe())
    print(f"saved to {out} in {time.time() - t0:.0f} s")
    return 0


def cmd_generate(args) -> int:
    import torch
    from transformers import StaticCache

    from .cache import MillionCache, fp16_bytes_per_token, pq_bytes_per_token
    from .codebook import Codebooks
    from .decode import generate as million_generate
    from .models import load_model, resolve_model

    if not args.sample and (args.temperature is not None or args.top_p is not None):
        raise ValueError("--temperature / --top-p set how to sample: they need --sample (greedy decoding otherwise)")
    if args.sample:
        args.temperature = 0.7 if args.temperature is None else args.temperature
        args.top_p = 0.9 if args.top_p is None else args.top_p
        if not args.temperature > 0:
            raise ValueError(f"--temperature {args.temperature:g} must be > 0")
        if not 0 < args.top_p <= 1:
            raise ValueError(f"--top-p {args.top_p:g} is out of range; allowed: (0, 1]")
    evict = None
    rule, given = _eviction_options(args)
    if given and args.keep is None:
        raise ValueError(f"{', '.join(given)}: eviction options; they need --keep F (the share of code tokens kept)")
    if args.keep is not None:
        from .config import Eviction

        evict = Eviction(keep=args.keep, **rule)  # ValueError names the allowed range
    src = resolve_model(args.model)
    cb = Codebooks.load(args.codebooks)
    device = _device(args.device)
    dtype = _dtype(args.dtype) if args.dtype else (torch.float32 if device == "cpu" else torch.float16)
    model, tok = load_model(src, dtype=dtype, device=device, attn_implementation="million")
    cb.check_model(model.config)
    if args.residual is not None or args.sinks is not None:
        from .config import PQConfig

        d = cb.config.to_dict()
        if args.residual is not None:
            d["residual_length"] = args.residual
        if args.sinks is not None:
            d["sink_length"] = args.sinks
        cb.config = PQConfig.from_dict(d)
    prompts = list(args.prompt)
    if not args.raw and getattr(tok, "chat_template", None):
        prompts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                   for p in prompts]
    if len(prompts) > 1:  # one left-padded batch
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    inputs = tok(prompts, return_tensors="pt", add_special_tokens=args.raw, padding=True).to(device)
    n_prompt = inputs.input_ids.shape[1]
    gen_kw = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, graph=None if not args.no_graph else False)
    if args.sample:
        gen_kw.update(temperature=args.temperature, top_p=args.top_p)
    outs = {}
    # both through million.generate: the fp16 cache is transformers' StaticCache, and on a GPU every decode step of
    # both replays a CUDA graph (--no-graph: eager steps)
    caches = (("fp16", StaticCache(config=model.config, max_cache_len=n_prompt + args.max_new_tokens)),
              ("pq", MillionCache(cb, model.config, evict=evict)))
    for name, cache in caches:
        g = torch.Generator(device=device).manual_seed(args.seed)
        t0 = time.time()
        o = million_generate(model, cache, inputs.input_ids, attention_mask=inputs.attention_mask, generator=g, **gen_kw)
        if device != "cpu":
            torch.cuda.synchronize()
        texts = [tok.decode(row[n_prompt:], skip_special_tokens=True).strip() for row in o]
        outs[name] = ("\n".join(texts) if len(texts) == 1 else "\n".join(f"[{i + 1}] {t}" for i, t in enumerate(texts)),
                      time.time() - t0, cache)
    c = cb.config
    fp16_b = fp16_bytes_per_token(model.config)
    pq_b = pq_bytes_per_token(model.config, c)
    lens = inputs.attention_mask.sum(-1).tolist()
    shown = f"{n_prompt} tokens" if len(lens) == 1 else f"{len(lens)} prompts of {', '.join(map(str, lens))} tokens (left-padded)"
    print(f"prompt: {shown}; PQ {c.M}x{c.nbits}-bit codes ({c.bits_per_element:g} bits/element), "
          f"full-precision window {c.residual_length}..{2 * c.residual_length} tokens, {c.sink_length} sink "
          f"token{'' if c.sink_length == 1 else 's'}")
    full = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "float32"}[dtype]
    held = fp16_b * dtype.itemsize // 2
    note = "" if dtype == torch.float16 else f"; fp16 would hold {fp16_b}"
    print(f"\n--- {full} KV cache ({held} bytes/token{note}) [{outs['fp16'][1]:.1f} s, with the first call's warm-up]"
          f"\n{outs['fp16'][0]}")
    print(f"\n--- million PQ KV cache ({pq_b:g} bytes/token = {pq_b / fp16_b:.3f} x fp16, window and sinks in {full}; "
          f"codebooks {cb.nbytes / 2**20:.2f} MiB once) [{outs['pq'][1]:.1f} s]\n{outs['pq'][0]}")
    lay = outs["pq"][2].layers[0]
    kept = f" (of {lay.pq_pos} code positions; eviction keeps {args.keep:g})" if evict is not None else ""
    print(f"\nPQ cache now: {lay.pq_len} tokens as codes{kept} + {lay.res_len} in the full-precision window per layer, "
          f"{outs['pq'][2].bits_per_element():.2f} bits/element held")
    return 0


def cmd_info(args) -> int:
    from .codebook import Codebooks

    print(Codebooks.load(args.dir).describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="million", description="Product-quantized KV cache for long-context LLM inference.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="{calibrate,generate,info,eval}")

    c = sub.add_parser("calibrate", help="train PQ codebooks for a model from calibration text")
    c.add_argument("--model", default="smollm2", help="'smollm2' (embedded default), a HF model directory or a .gguf file")
    c.add_argument("--bits", type=float, default=4, help="bits per K/V element (default 4)")
    c.add_argument("--nbits", type=_int_range("--nbits", 4, 12), default=8, help="bits per code, 4..12 (default 8: M = head_dim*bits/8 subspaces)")
    c.add_argument("--out", required=True, help="codebook directory to write")
    c.add_argument("--text", default="squad", help="'squad' (default), 'essays' or a UTF-8 text file")
    c.add_argument("--tokens", type=_positive("--tokens"), default=32768, help="calibration tokens (default 32768)")
    c.add_argument("--window", type=_positive("--window"), default=None,
                   help="tokens per forward (default: the model's max_position_embeddings, at most 8192); post-RoPE "
                        "keys are calibrated at positions below it, so make it at least the context the codebooks will serve")
    c.add_argument("--samples", type=_positive("--samples"), default=32768,
                   help="vectors per codebook for k-means (default 32768: every calibration vector at the default --tokens)")
    c.add_argument("--iters", type=_positive("--iters"), default=16, help="k-means iterations (default 16)")
    c.add_argument("--recipe", choices=RECIPES, default="recommended",
                   help="defaults of --granularity, --sinks, --transform and --rotation: 'recommended' (layer_head, 1 sink, "
                        "metric, balanced-keys: the best measured recipe the cache serves, docs/quality.md) or 'plain' (layer, "
                        "0 sinks, no transform, no rotation); flags given explicitly win (default recommended)")
    c.add_argument("--granularity", choices=GRANULARITIES, default=None, help="codebook sharing (default: the recipe's)")
    c.add_argument("--residual", type=_positive("--residual"), default=128, help="full-precision window length R (default 128)")
    c.add_argument("--sinks", type=_nonnegative("--sinks"), default=None, help="first tokens kept in full precision (attention sinks; default: the recipe's)")
    c.add_argument("--pre-rope", action="store_true",
                   help="capture keys before RoPE (for comparisons; the recipe's transform and rotation are then off)")
    c.add_argument("--transform", choices=TRANSFORMS, default=None,
                   help="train the codes in a transformed space the cache folds into queries and outputs: 'metric' "
                        "(the error attention and o_proj see) or 'hadamard' (default: the recipe's)")
    c.add_argument("--rotation", choices=ROTATIONS, default=None,
                   help="also rotate onto the principal axes, with the variance dealt evenly over the subspaces (after "
                        "--transform; folded into queries and outputs like it; needs --granularity layer_head): "
                        "'balanced' keys and values, 'balanced-keys' keys only (default: the recipe's; off for other granularities)")
    c.add_argument("--finetune-steps", type=_nonnegative("--finetune-steps"), default=0,
                   help="after k-means, tune the centroids end to end for this many steps (KL to the unquantized model on "
                        "the calibration text; same bits and format; measured gains in docs/quality.md; default 0: off)")
    c.add_argument("--finetune-lr", type=float, default=5e-3, help="tuning step size, a fraction of each codebook's RMS (default 5e-3)")
    c.add_argument("--finetune-window", type=_positive("--finetune-window"), default=2048,
                   help="tokens per tuning step (default 2048, at most --window)")
    c.add_argument("--seed", type=int, default=0, help="k-means seeding and sampling (default 0)")
    c.add_argument("--device", default=None, help="cpu, cuda or auto (default)")
    c.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    c.set_defaults(func=cmd_calibrate)

    g = sub.add_parser("generate", help="generate with an fp16 and a PQ cache, side by side")
    g.add_argument("prompt", nargs="+", help="one or more prompts (several are generated as one left-padded batch)")
    g.add_argument("--model", default="smollm2", help="'smollm2' (embedded default), a HF model directory or a .gguf file")
    g.add_argument("--codebooks", required=True, help="directory written by `million calibrate`")
    g.add_argument("--max-new-tokens", type=_positive("--max-new-tokens"), default=64, help="tokens to generate (default 64)")
    g.add_argument("--residual", type=_positive("--residual"), default=None, help="override the window length R")
    g.add_argument("--sinks", type=_nonnegative("--sinks"), default=None, help="override the number of full-precision sink tokens")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=None, help="with --sample: softmax temperature (default 0.7)")
    g.add_argument("--top-p", type=float, default=None, help="with --sample: nucleus share (default 0.9)")
    g.add_argument("--seed", type=int, default=0, help="with --sample: the sampling seed (default 0)")
    g.add_argument("--raw", action="store_true", help="do not apply the chat template")
    g.add_argument("--keep", type=float, default=None,
                   help="evict code tokens, keeping this share of them: heavy hitters and recent (million.Eviction; default keep all)")
    g.add_argument("--recent", type=float, default=0.5, help="with --keep: share of the budget for the most recent tokens (default 0.5)")
    g.add_argument("--observe", type=int, default=None,
                   help="with --keep: the prompt scores tokens by its last N queries only (SnapKV-style; default: all)")
    g.add_argument("--pool", type=int, default=1, help="with --keep: max-pool scores over this many neighbouring tokens (odd; default 1)")
    g.add_argument("--pool-side", default="both", choices=("both", "after"),
                   help="with --pool: the window centred on each token (both) or behind it (after: each heavy hitter keeps "
                        "the tokens that follow it)")
    g.add_argument("--pool-share", type=float, default=1.0,
                   help="with --pool: share of the heavy-hitter budget chosen by pooled scores; the rest by the scores themselves "
                        "(default 1)")
    g.add_argument("--no-graph", action="store_true", help="on a GPU, run decode steps eagerly instead of replaying a CUDA graph")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default)")
    g.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: float32 on CPU, float16 on GPU)")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("info", help="what a codebook directory holds")
    i.add_argument("dir", help="codebook directory written by `million calibrate`")
    i.set_defaults(func=cmd_info)

    try:
        from .eval.cli import add_eval_parser
    except ImportError:
        add_eval_parser = None
    if add_eval_parser is not None:
        add_eval_parser(sub)
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("million: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotImplementedError, RuntimeError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"million: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
