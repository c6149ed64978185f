"""PQ codebooks: key and value centroids for every layer / KV head, saved as safetensors + JSON.

Layout: ``key_centroids`` and ``value_centroids`` are ``[Lg, Hg, M, ksub, dsub]`` where the
granularity fixes ``(Lg, Hg)``: ``merged`` -> ``(1, 1)``, ``layer`` -> ``(L, 1)``,
``layer_head`` -> ``(L, H_kv)``. ``for_layer(l)`` gives the ``[Hc, M, ksub, dsub]`` slices the ops take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import PQConfig

FORMAT_VERSION = 1
TENSORS_FILE = "codebooks.safetensors"
META_FILE = "codebooks.json"


def model_identity(config) -> dict:
    """What a set of codebooks must match in a model: architecture and attention geometry."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None)) if isinstance(rope, dict) else None
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "default"
    arch = (getattr(config, "architectures", None) or [getattr(config, "model_type", "unknown")])[0]
    return {
        "architecture": arch,
        "model_type": getattr(config, "model_type", None),
        "num_hidden_layers": int(config.num_hidden_layers),
        "num_attention_heads": int(config.num_attention_heads),
        "num_key_value_heads": int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads),
        "head_dim": int(head_dim),
        "rope_theta": float(theta) if theta is not None else None,
        "rope_type": rope_type,
    }


_MUST_MATCH = ("num_hidden_layers", "num_key_value_heads", "head_dim", "rope_theta", "rope_type")


def granularity_shape(granularity: str, num_layers: int, num_kv_heads: int) -> tuple[int, int]:
    return {"merged": (1, 1), "layer": (num_layers, 1), "layer_head": (num_layers, num_kv_heads)}[granularity]


def _transform_name(var: dict) -> str:
    """The stored transforms as the variant names them: the transform, then the balanced PCA rotation if any."""
    name = var.get("transform", "yes")
    rot = {"balanced": "balanced rotation (keys and values)", "balanced_k": "balanced rotation (keys)"}.get(var.get("alloc"))
    if rot:
        name = rot if name == "none" else f"{name} + {rot}"
    return name


def _chmod_like_umask(path: Path) -> None:
    import os

    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


@dataclass
class Codebooks:
    """Trained PQ codebooks for one model.

    Attributes
    ----------
    config : PQConfig
    key_centroids, value_centroids : float32 ``[Lg, Hg, M, ksub, dsub]``
    model : dict, the :func:`model_identity` of the model they were trained on (plus ``name``)
    calibration : dict, how they were trained (text, tokens, samples, seed, iterations, distortion, pre_rope)
    transforms : optional dict of float32 ``[L, H_kv, D, D]`` tensors ``key``, ``key_inverse``, ``value``,
        ``value_inverse`` (row-vector convention): the codes quantize ``k @ key`` and ``v @ value``;
        attention uses ``q @ key_inverse^T`` on the codes and maps their output back with
        ``value_inverse`` (e.g. the attention-metric transforms of :mod:`million.pq_variants`)
    """

    config: PQConfig
    key_centroids: torch.Tensor
    value_centroids: torch.Tensor
    model: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    transforms: dict | None = None

    def __post_init__(self):
        c = self.config
        for name in ("key_centroids", "value_centroids"):
            t = getattr(self, name)
            if t.dim() != 5 or tuple(t.shape[2:]) != (c.M, c.ksub, c.dsub):
                raise ValueError(
                    f"{name} must be [Lg, Hg, M={c.M}, ksub={c.ksub}, dsub={c.dsub}], got {tuple(t.shape)}"
                )
        if self.key_centroids.shape != self.value_centroids.shape:
            raise ValueError(
                f"key and value centroids differ in shape: {tuple(self.key_centroids.shape)} vs "
                f"{tuple(self.value_centroids.shape)}"
            )
        Lg, Hg = self.key_centroids.shape[:2]
        if self.model:
            want = granularity_shape(c.granularity, self.model["num_hidden_layers"], self.model["num_key_value_heads"])
            if (Lg, Hg) != want:
                raise ValueError(f"granularity {c.granularity!r} needs centroids [{want[0]}, {want[1]}, ...], got [{Lg}, {Hg}, ...]")
        if self.transforms is not None:
            names = {"key", "key_inverse", "value", "value_inverse"}
            if set(self.transforms) != names:
                raise ValueError(f"transforms must have exactly the keys {sorted(names)}, got {sorted(self.transforms)}")
            shapes = {tuple(t.shape) for t in self.transforms.values()}
            sh = next(iter(shapes))
            if len(shapes) != 1 or len(sh) != 4 or sh[2:] != (c.head_dim, c.head_dim):
                raise ValueError(f"transforms must all be [L, H_kv, {c.head_dim}, {c.head_dim}], got {sorted(shapes)}")
            if self.model and sh[:2] != (self.model["num_hidden_layers"], self.model["num_key_value_heads"]):
                raise ValueError(f"transforms are [{sh[0]}, {sh[1]}, ...] but the model has {self.model['num_hidden_layers']} "
                                 f"layers and {self.model['num_key_value_heads']} KV heads")

    @property
    def num_layers(self) -> int | None:
        return self.model.get("num_hidden_layers")

    def for_layer(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(key, value)`` centroids of one layer, each ``[Hc, M, ksub, dsub]`` (``Hc`` 1 or ``H_kv``)."""
        Lg = self.key_centroids.shape[0]
        if Lg == 1:
            li = 0
        else:
            if not 0 <= layer_idx < Lg:
                raise ValueError(f"layer_idx={layer_idx} out of range; codebooks have {Lg} layers")
            li = layer_idx
        return self.key_centroids[li], self.value_centroids[li]

    def transforms_for_layer(self, layer_idx: int) -> tuple | None:
        """``(key, key_inverse, value, value_inverse)``, each ``[H_kv, D, D]``, or None without transforms."""
        if self.transforms is None:
            return None
        t = self.transforms
        return tuple(t[n][layer_idx] for n in ("key", "key_inverse", "value", "value_inverse"))

    def to(self, device=None, dtype=None) -> "Codebooks":
        tr = None if self.transforms is None else {n: t.to(device=device) for n, t in self.transforms.items()}
        return Codebooks(
            self.config,
            self.key_centroids.to(device=device, dtype=dtype),
            self.value_centroids.to(device=device, dtype=dtype),
            dict(self.model),
            dict(self.calibration),
            tr,
        )

    @property
    def nbytes(self) -> int:
        """Bytes of both codebooks as stored on the accelerator (fp16)."""
        return 2 * (self.key_centroids.numel() + self.value_centroids.numel())

    def check_model(self, config) -> None:
        """Raise ``ValueError`` if these codebooks do not fit the model with HF ``config``."""
        have = model_identity(config)
        bad = [
            f"{k}: codebooks {self.model.get(k)!r} vs model {have[k]!r}"
            for k in _MUST_MATCH
            if k in self.model and self.model.get(k) != have[k]
        ]
        # the codebooks' own head_dim, even without a stored identity (else it only fails at the first forward)
        if self.config.head_dim != have["head_dim"] and not any(b.startswith("head_dim") for b in bad):
            bad.append(f"head_dim: codebooks {self.config.head_dim!r} vs model {have['head_dim']!r}")
        if bad:
            raise ValueError(
                f"codebooks trained for {self.model.get('name') or self.model.get('architecture') or 'another model'} "
                f"do not fit this model ("
                + "; ".join(bad)
                + ")"
            )

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {"key_centroids": self.key_centroids.float().contiguous().cpu(), "value_centroids": self.value_centroids.float().contiguous().cpu()}
        for n, t in (self.transforms or {}).items():
            tensors[f"transform_{n}"] = t.float().contiguous().cpu()
        save_file(tensors, str(d / TENSORS_FILE))
        _chmod_like_umask(d / TENSORS_FILE)  # safetensors writes 0600; the JSON beside it gets the umask's mode
        meta = {
            "format": "million-codebooks",
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "model": self.model,
            "calibration": self.calibration,
        }
        (d / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path, device="cpu") -> "Codebooks":
        from safetensors.torch import load_file

        d = Path(directory)
        if not d.is_dir():
            what = "is a file, not a codebook directory" if d.exists() else "does not exist"
            raise FileNotFoundError(f"codebook directory {str(directory)!r} {what}")
        if not (d / META_FILE).is_file() or not (d / TENSORS_FILE).is_file():
            raise FileNotFoundError(f"{str(directory)!r} is not a codebook directory (needs {META_FILE} and {TENSORS_FILE}); make one with `million calibrate`")
        try:
            meta = json.loads((d / META_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{d / META_FILE} is not valid JSON: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != "million-codebooks":
            raise ValueError(f"{d / META_FILE} is not a million codebook file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"codebook format version {meta.get('format_version')} is not supported; this million reads {FORMAT_VERSION}")
        if not isinstance(meta.get("config"), dict):
            raise ValueError(f"{d / META_FILE} has no 'config' object (the PQ settings); remake it with `million calibrate`")
        try:
            t = load_file(str(d / TENSORS_FILE), device=str(device))
        except Exception as e:  # safetensors raises its own error type for a damaged file
            raise ValueError(f"{d / TENSORS_FILE} cannot be read ({e}); remake it with `million calibrate`") from None
        missing = [n for n in ("key_centroids", "value_centroids") if n not in t]
        if missing:
            raise ValueError(f"{d / TENSORS_FILE} lacks {', '.join(missing)}; remake it with `million calibrate`")
        tr = {n[len("transform_"):]: v for n, v in t.items() if n.startswith("transform_")} or None
        model, cal = meta.get("model") or {}, meta.get("calibration") or {}
        if not isinstance(model, dict) or not isinstance(cal, dict):
            raise ValueError(f"{d / META_FILE}: 'model' and 'calibration' must be objects")
        return cls(PQConfig.from_dict(meta["config"]), t["key_centroids"], t["value_centroids"], model, cal, tr)

    def describe(self) -> str:
        """What ``million info`` prints: shapes, bits, transforms, calibration and tuning."""
        c = self.config
        lines = [
            (f"model        : {self.model.get('name', '?')} ({self.model.get('architecture', '?')}, "
             f"{self.model.get('num_hidden_layers')} layers, {self.model.get('num_key_value_heads')} KV heads, head_dim {c.head_dim})"
             if self.model else f"model        : not recorded (head_dim {c.head_dim}; checked against a model at use)"),
            f"PQ           : M={c.M} subspaces x dsub={c.dsub}, nbits={c.nbits} (ksub={c.ksub}), {c.bits_per_element:g} bits/element",
            f"granularity  : {c.granularity}  centroids {list(self.key_centroids.shape)} (K and V)",
            f"residual     : {c.residual_length} tokens fp16;  sinks: {c.sink_length}",
            "transforms   : " + ("none" if self.transforms is None else _transform_name(self.calibration.get("variant") or {})
                                  + " (per layer and KV head, folded into queries and outputs)"),
            f"codebook size: {self.nbytes / 2**20:.2f} MiB (fp16)",
        ]
        cal = self.calibration
        if cal:
            var = cal.get("variant") or {}  # codebooks trained through million.pq_variants keep these there

            def get(key, alt=None):
                return cal.get(key, cal.get(alt, var.get(key, "?")))

            lines.append(
                f"calibration  : {get('text', 'calibration_text')}, {get('tokens', 'calibration_tokens')} tokens, "
                f"{get('samples')} samples/codebook, {get('iters')} iters, seed {get('seed')}, "
                f"keys {'pre' if cal.get('pre_rope') else 'post'}-RoPE"
                + (f", {cal['recipe']} recipe" if cal.get("recipe") else "")
            )
            if "distortion_k" in cal:
                lines.append(f"distortion   : K {cal['distortion_k']:.4g}  V {cal['distortion_v']:.4g} (relative MSE)")
            ft = cal.get("finetune")
            if ft:
                lines.append(f"tuned        : {ft['steps']} steps, lr {ft['lr']:g} ({ft.get('schedule', 'constant')}), "
                             f"{ft['windows']} windows of {ft['window']} tokens, KL {ft['loss_first']:.4g} -> {ft['loss_last']:.4g}")
        return "\n".join(lines)
