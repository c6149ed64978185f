"""End-to-end codebook tuning: move the centroids to minimise the model's own loss.

k-means places centroids to minimise the reconstruction error of K and V (in the attention metric
when a ``metric`` transform is used). The model does not care about that error evenly: what it pays
is the change of its next-token distribution, summed over every layer, where the errors of keys and
values compound. This step starts from the k-means codebooks and runs gradient descent on the
centroids alone (model weights, transforms, subspaces and code widths stay fixed), through the
all-quantized forward pass:

- every K/V of a calibration window is encoded to its nearest centroid with the *current* centroids
  (no straight-through trick is needed: the reconstruction ``centroids[code]`` is differentiable in
  the centroids, and the codes follow the centroids as they move, exactly as the cache's encoder will);
- the loss is the KL divergence from the unquantized model's next-token distribution (``objective="kl"``,
  default) or the next-token cross-entropy of the text (``"ce"``);
- Adam, one step per window, with a step size per centroid tensor proportional to its RMS, so layers
  whose K/V live at different scales move by the same fraction of a quantization cell.

The result has the same format, bits and decode cost as the codebooks it started from (MillionCache
and the kernels are unchanged). The measured effect is in ``docs/quality.md`` ("End-to-end codebook
tuning"); :func:`finetune_codebooks` returns the loss history.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

OBJECTIVES = ("kl", "ce")
SCHEDULES = ("cosine", "constant")


def _leaf(t: torch.Tensor, device) -> torch.Tensor:
    return t.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)


def _rms(t: torch.Tensor) -> float:
    t = t.detach()
    nz = t[t != 0]
    return float(nz.pow(2).mean().sqrt()) if nz.numel() else 1.0


def finetune_codebooks(cb, model, windows: list, steps: int = 64, lr: float = 2e-3, objective: str = "kl",
                       tune: str = "kv", schedule: str = "cosine", progress: bool = False, log=None) -> dict:
    """Tune the centroids of ``cb`` (:class:`~million.pq_variants.PQVariantCodebooks`) in place.

    ``windows``: token id tensors ``[1, T]`` of calibration text (held out from any scoring text);
    step ``i`` uses ``windows[i % len(windows)]``. ``lr``: Adam step size as a fraction of each
    centroid tensor's RMS. ``tune``: ``"kv"``, ``"k"`` or ``"v"`` (which centroids move).
    ``schedule``: ``"cosine"`` (the step size decays to 0 over ``steps``) or ``"constant"``.
    ``log(step, loss)`` is called after every step. Returns ``{"loss": [...], "seconds": s, ...}``.
    The codebooks come back on the CPU, detached.
    """
    from .compat import cache_arg
    from .eval.runners import QDQCache

    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}")
    if tune not in ("kv", "k", "v"):
        raise ValueError(f"tune={tune!r} is not one of ('kv', 'k', 'v')")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} must be > 0")
    if not windows:
        raise ValueError("finetune_codebooks needs at least one calibration window")
    for w in windows:
        if w.dim() != 2 or w.shape[0] != 1 or w.shape[1] < 2:
            raise ValueError(f"every window must be token ids of shape [1, T] with T >= 2, got {tuple(w.shape)}")
    dev = next(model.parameters()).device
    L = len(cb.key_centroids)
    # centroids become leaves on the model's device; transforms and allocations move there too (the
    # memo of device copies in PQVariantCodebooks would otherwise hand out stale copies)
    cb.__dict__.pop("_device_copies", None)
    cb.__dict__.pop("_plans", None)
    params = []
    for name in ("key_centroids", "value_centroids"):
        lst = getattr(cb, name)
        train = (name[0] in tune)
        new, shared = [], {}
        for t in lst:
            # merged codebooks are one tensor seen by every layer: one leaf for all of them
            key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
            if key in shared:
                new.append(shared[key])
                continue
            x = _leaf(t, dev) if train else t.detach().to(dev)
            shared[key] = x
            new.append(x)
            if train:
                params.append({"params": [x], "lr": lr * _rms(x)})
        setattr(cb, name, new)
    for name in ("key_transform", "key_inverse", "value_transform", "value_inverse", "key_alloc", "value_alloc"):
        lst = getattr(cb, name)
        if lst:
            setattr(cb, name, [t.to(dev) for t in lst])
    opt = torch.optim.Adam(params, betas=(0.9, 0.99))
    base_lrs = [g["lr"] for g in opt.param_groups]
    req = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    history = []
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="tuning codebooks", unit="step")
    try:
        for i in range(steps):
            ids = windows[i % len(windows)].to(dev)
            with torch.no_grad():
                ref = model(input_ids=ids, use_cache=False).logits.float()[0, :-1]
                ref_lp = F.log_softmax(ref, -1) if objective == "kl" else None
                del ref
            cb.__dict__.pop("_plans", None)  # the subspace plans hold copies of the centroids
            cache = QDQCache(L, cb.qdq_keys, cb.qdq_values)
            logits = model(input_ids=ids, **cache_arg(model, cache), use_cache=True).logits.float()[0, :-1]
            lp = F.log_softmax(logits, -1)
            if objective == "kl":
                loss = F.kl_div(lp, ref_lp, log_target=True, reduction="batchmean")
            else:
                loss = F.nll_loss(lp, ids[0, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if schedule == "cosine":
                f = 0.5 * (1 + math.cos(math.pi * i / steps))
                for g, b in zip(opt.param_groups, base_lrs):
                    g["lr"] = b * f
            opt.step()
            v = float(loss.detach())
            if not math.isfinite(v):
                raise FloatingPointError(f"codebook tuning diverged at step {i} (loss {v}); lower lr (now {lr})")
            history.append(v)
            if log is not None:
                log(i, v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{v:.4g}")
    finally:
        if bar is not None:
            bar.close()
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
        cb.__dict__.pop("_plans", None)
        cb.__dict__.pop("_device_copies", None)
        for name in ("key_centroids", "value_centroids", "key_transform", "key_inverse", "value_transform",
                     "value_inverse", "key_alloc", "value_alloc"):
            lst = getattr(cb, name)
            if lst:
                done = {}  # one tensor seen by several layers (merged) stays one tensor
                for t in lst:
                    if id(t) not in done:
                        done[id(t)] = t.detach().cpu()
                setattr(cb, name, [done[id(t)] for t in lst])
    info = {"steps": steps, "lr": lr, "schedule": schedule, "objective": objective, "tune": tune, "windows": len(windows),
            "window": int(windows[0].shape[1]), "loss_first": history[0], "loss_last": history[-1],
            "seconds": time.time() - t0}
    cb.info = {**(cb.info or {}), "finetune": info}
    return {**info, "loss": history}
