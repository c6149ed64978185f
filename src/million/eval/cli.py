"""``million eval ppl`` and ``million eval needle``.

The main CLI calls :func:`add_eval_parser` and then ``args.func(args)``; bad input raises
``ValueError`` with one line naming the bad value and the allowed ones (the main CLI prints it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from ..cli import _positive
from .methods import METHOD_BITS
from .runners import PROTOCOLS

TEXTS = ("squad", "essays")
HIGH_TIER = {"high_share": 0.0, "high_bits": 8, "high_by": "score"}  # pqsparse's high tier off: the flags' defaults
EVICTING = ("pqsparse", "qhitter")  # methods that evict in the all-quantized protocol (take --recent, --observe, --pool)


def _bits(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):  # (an ArgumentTypeError keeps this message; argparse replaces a ValueError's)
        raise argparse.ArgumentTypeError(f"--bits {s!r} is not a number; allowed: e.g. 16, 4, 3, 2")
    return int(v) if v == int(v) else v


def _int_list(name: str, s: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} {s!r} is not a comma-separated list of integers; allowed: e.g. 1024,2048,4096,8192") from None
    if not out or any(x < 32 for x in out):
        raise ValueError(f"{name} {s!r} must list token counts >= 32")
    return out


def _float_list(name: str, s: str) -> list[float]:
    try:
        out = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} {s!r} is not a comma-separated list of numbers in [0, 1]; allowed: e.g. 0.1,0.5,0.9") from None
    if not out or any(not 0 <= x <= 1 for x in out):
        raise ValueError(f"{name} {s!r} must list depths in [0, 1]")
    return out


def _validate_common(args) -> None:
    if args.method not in METHOD_BITS:
        raise ValueError(f"--method {args.method!r} is not one of {sorted(METHOD_BITS)}")
    if args.protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {args.protocol!r} is not one of {PROTOCOLS}")
    allowed = METHOD_BITS[args.method]
    if allowed is not None and args.bits not in allowed:
        raise ValueError(f"--bits {args.bits:g} is not available for {args.method}; allowed: {allowed}")
    if args.codebooks is not None and not Path(args.codebooks).is_dir():
        raise ValueError(f"--codebooks {args.codebooks!r} is not a directory; give one written by `million calibrate`")
    if args.protocol == "served" and (args.method != "pq" or args.codebooks is None):
        raise ValueError(f"--protocol served runs MillionCache: it needs --method pq and --codebooks DIR, got --method {args.method}"
                         + ("" if args.codebooks else " and no --codebooks"))
    if args.keep is not None and args.protocol != "served":
        raise ValueError(f"--keep {args.keep:g} (eviction) applies to --protocol served only, not {args.protocol!r}")
    from ..cli import _eviction_options

    evicting = (args.protocol == "served" and args.keep is not None) or args.method in EVICTING
    given = _eviction_options(args)[1]
    if given and not evicting:
        raise ValueError(f"{', '.join(given)}: eviction options; allowed only with --method {' or '.join(EVICTING)}, or with "
                         f"--protocol served and --keep (got --method {args.method} --protocol {args.protocol})")
    if args.chunk < 1:
        raise ValueError(f"--chunk {args.chunk} must be >= 1")
    if any(getattr(args, k) != v for k, v in HIGH_TIER.items()) and args.method != "pqsparse":
        raise ValueError(f"--high-share / --high-bits / --high-by: a high-precision tier of kept tokens; allowed only with "
                         f"--method pqsparse (got --method {args.method})")
    if not 0 <= args.high_share < 1:
        raise ValueError(f"--high-share {args.high_share:g} is out of range; allowed: [0, 1)")
    if args.json and Path(args.json).is_dir():  # before the run, not after it
        raise ValueError(f"--json {args.json} is a directory; give a file path (e.g. {Path(args.json) / 'result.json'})")


def _setup(args):
    """Load the model, build and fit the method. Returns ``(model, tokenizer, method, model_name)``."""
    import torch

    from ..cli import _device, _eviction_options
    from ..models import load_model, resolve_model
    from .calibdata import load_or_collect
    from .methods import make_method

    torch.set_num_threads(args.threads)
    src = resolve_model(args.model)
    rule = _eviction_options(args)[0]
    kw = dict(rule) if args.method in EVICTING else {}
    if args.method == "pqsparse":
        kw.update(high=args.high_share, high_bits=args.high_bits, high_by=args.high_by)
    method = make_method(args.method, args.bits, args.codebooks, **kw)
    if args.protocol == "served":
        from ..config import Eviction

        method.evict = None if args.keep is None else Eviction(keep=args.keep, **rule)
        method.chunk = args.chunk
    model, tok = load_model(src, dtype=torch.float32, device=_device(args.device))
    method.fit(model, lambda: load_or_collect(model, tok, args.calib_text, args.calib_tokens, 2048, model_name=src.name,
                                              progress=not args.quiet, fisher=method.needs_fisher))
    return model, tok, method, src.name


def _write(result: dict, path: str | None) -> None:
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(result, indent=2) + "\n")


def cmd_ppl(args) -> int:
    from ..data import load_text
    from .ppl import default_offset, perplexity

    _validate_common(args)
    if args.window < 2:
        raise ValueError(f"--window {args.window} must be >= 2")
    if args.max_windows < 1:
        raise ValueError(f"--max-windows {args.max_windows} must be >= 1")
    text = load_text(args.text)  # raises FileNotFoundError naming the allowed corpora
    model, tok, method, model_name = _setup(args)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    offset = default_offset(args.text) if args.offset is None else args.offset
    prog = None if args.quiet else (lambda i, n, p: print(f"  window {i}/{n}: running ppl {p:.4f}", file=sys.stderr, flush=True))
    r = perplexity(model, ids, method, args.protocol, args.window, args.max_windows, offset, args.text, prog)
    r.update({"model": model_name, "device": args.device, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    print(f"{r['label']} [{r['protocol']}] on {args.text}: ppl {r['ppl']:.4f} over {r['tokens']} tokens "
          f"({r['windows']} x {r['window']}), {r['bits_per_element']:.3f} bits/element at {r['window']} tokens, "
          f"{r['bits_per_element_32k']:.3f} at 32K")
    _write(r, args.json)
    return 0


def cmd_needle(args) -> int:
    from ..data import load_text
    from .needle import needle_eval

    _validate_common(args)
    contexts = _int_list("--contexts", args.contexts)
    depths = _float_list("--depths", args.depths)
    hay = load_text(args.haystack)
    model, tok, method, model_name = _setup(args)
    hay_ids = tok(hay[: 60 * max(contexts)], return_tensors="pt", add_special_tokens=False).input_ids[0]
    prog = None if args.quiet else (lambda c: print(f"  ctx {c['context']} depth {c['depth']}: expected {c['expected']} "
                                                    f"got {c['answer'].strip()!r} {'ok' if c['correct'] else 'MISS'}",
                                                    file=sys.stderr, flush=True))
    r = needle_eval(model, tok, method, hay_ids, contexts, depths, args.protocol, args.max_new_tokens, args.seed, prog)
    r.update({"model": model_name, "haystack": args.haystack, "device": args.device, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    acc = ", ".join(f"{c}: {a:.2f}" for c, a in r["accuracy_by_context"].items())
    print(f"{r['label']} [{r['protocol']}] needle accuracy {r['accuracy']:.3f} ({acc})")
    _write(r, args.json)
    return 0


def _common(p) -> None:
    p.add_argument("--model", default="smollm2", help="'smollm2' (embedded default), a HF model directory or a .gguf file")
    p.add_argument("--method", default="fp16", help=f"one of {sorted(METHOD_BITS)} (default fp16)")
    p.add_argument("--bits", type=_bits, default=16, help="bits per element of the method (default 16)")
    p.add_argument("--codebooks", default=None, help="PQ codebook directory (million calibrate or a PQ variant) for pq/million")
    p.add_argument("--protocol", default="all-quantized", help=f"one of {PROTOCOLS} (default all-quantized)")
    p.add_argument("--calib-text", default="squad", help="text for methods that calibrate in-process (default squad)")
    p.add_argument("--calib-tokens", type=_positive("--calib-tokens"), default=16384, help="calibration tokens (first part of the text; default 16384)")
    p.add_argument("--threads", type=_positive("--threads"), default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="cpu", help="where the float32 model runs: cpu (default), cuda, cuda:N or auto")
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.add_argument("--keep", type=float, default=None,
                   help="protocol served: evict code tokens, keeping this share of them (million.Eviction; default keep all)")
    p.add_argument("--recent", type=float, default=0.5,
                   help="eviction (protocol served with --keep, or methods pqsparse / qhitter): share of the budget for "
                        "recent tokens (default 0.5)")
    p.add_argument("--observe", type=int, default=None,
                   help="eviction: a prompt scores tokens by its last N queries only (default: all); pqsparse / qhitter "
                        "then prefill a needle prompt in one step")
    p.add_argument("--pool", type=int, default=1,
                   help="eviction: max-pool scores over this many neighbouring tokens (odd; default 1)")
    p.add_argument("--pool-side", default="both", choices=("both", "after"),
                   help="eviction with --pool: the window centred on each token (both, default) or behind it "
                        "(after: each heavy hitter keeps the tokens that follow it)")
    p.add_argument("--pool-share", type=float, default=1.0,
                   help="eviction with --pool: share of the heavy-hitter budget chosen by pooled scores; the rest first, by the "
                        "scores themselves (default 1)")
    p.add_argument("--high-share", type=float, default=HIGH_TIER["high_share"],
                   help="pqsparse: share of the tokens seen kept in a high-precision tier instead of their codes, the "
                        "strongest by score; paid for by keeping fewer tokens (default 0)")
    p.add_argument("--high-bits", type=int, default=HIGH_TIER["high_bits"], choices=(8, 16),
                   help="pqsparse with --high-share: the tier's precision, 8 (int8, groups of 32, 9 bits/element; default) or 16")
    p.add_argument("--high-by", default=HIGH_TIER["high_by"], choices=("score", "pooled"),
                   help="pqsparse with --high-share: rank the tier by discounted score (default) or by pooled score")
    p.add_argument("--chunk", type=int, default=1, help="protocol served: tokens per forward (default 1: every position a decode step)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_eval_parser(subparsers) -> None:
    """Register ``eval`` with subcommands ``ppl`` and ``needle`` on the main CLI's subparsers."""
    e = subparsers.add_parser("eval", help="quality: perplexity and needle-in-a-haystack per KV method")
    es = e.add_subparsers(dest="eval_command", required=True, parser_class=type(e), metavar="{ppl,needle}")

    p = es.add_parser("ppl", help="perplexity over non-overlapping windows")
    _common(p)
    p.add_argument("--text", default="squad", help=f"one of {TEXTS} or a UTF-8 file (default squad)")
    p.add_argument("--window", type=int, default=2048, help="tokens per window (default 2048)")
    p.add_argument("--max-windows", type=int, default=8, help="windows to score (default 8)")
    p.add_argument("--offset", type=int, default=None,
                   help="first token scored (default: 65536 for squad, held out from calibration; 0 otherwise)")
    p.set_defaults(func=cmd_ppl)

    n = es.add_parser("needle", help="needle-in-a-haystack accuracy on the essays")
    _common(n)
    n.add_argument("--contexts", default="1024,2048,4096,8192", help="prompt lengths in tokens (default 1024,2048,4096,8192)")
    n.add_argument("--depths", default="0.1,0.5,0.9", help="needle depths in [0, 1] (default 0.1,0.5,0.9)")
    n.add_argument("--haystack", default="essays", help="haystack text (default essays)")
    n.add_argument("--max-new-tokens", type=_positive("--max-new-tokens"), default=10,
                   help="tokens generated for each answer (default 10)")
    n.add_argument("--seed", type=int, default=0, help="which needles (numbers and their placement; default 0)")
    n.set_defaults(func=cmd_needle)
