"""Codebooks: shapes per granularity, for_layer, check_model against HF configs, and the
safetensors + JSON format (round trip, version, missing files)."""

import json

import pytest
import torch
from transformers import LlamaConfig, Qwen2Config

from million import PQConfig
from million.codebook import FORMAT_VERSION, META_FILE, TENSORS_FILE, Codebooks, granularity_shape, model_identity

L, HKV, HQ, D = 3, 2, 4, 16


def llama_config(**over):
    kw = dict(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=L, num_attention_heads=HQ,
        num_key_value_heads=HKV, head_dim=D,
    )
    kw.update(over)
    return LlamaConfig(**kw)


def make_codebooks(granularity="layer", M=4, nbits=4, config=None, seed=0) -> Codebooks:
    config = config or llama_config()
    ident = model_identity(config)
    Lg, Hg = granularity_shape(granularity, ident["num_hidden_layers"], ident["num_key_value_heads"])
    pq = PQConfig(head_dim=ident["head_dim"], M=M, nbits=nbits, granularity=granularity, residual_length=7, sink_length=2)
    g = torch.Generator().manual_seed(seed)
    kc = torch.randn(Lg, Hg, M, pq.ksub, pq.dsub, generator=g)
    vc = torch.randn(Lg, Hg, M, pq.ksub, pq.dsub, generator=g)
    cal = {"text": "unit", "tokens": 123, "iters": 3, "seed": seed, "pre_rope": False, "distortion_k": 0.125, "distortion_v": 0.0625}
    return Codebooks(pq, kc, vc, {**ident, "name": "tiny-llama"}, cal)


# ---------------------------------------------------------------- model identity


def test_model_identity_of_llama_config():
    ident = model_identity(llama_config(rope_parameters={"rope_type": "default", "rope_theta": 5e5}))
    assert ident == {
        "architecture": "llama", "model_type": "llama", "num_hidden_layers": L, "num_attention_heads": HQ,
        "num_key_value_heads": HKV, "head_dim": D, "rope_theta": 5e5, "rope_type": "default",
    }


def test_model_identity_head_dim_defaults_to_hidden_over_heads():
    cfg = Qwen2Config(vocab_size=64, hidden_size=96, intermediate_size=64, num_hidden_layers=1, num_attention_heads=3, num_key_value_heads=1)
    ident = model_identity(cfg)
    assert (ident["head_dim"], ident["num_key_value_heads"]) == (32, 1)


def test_model_identity_uses_architectures_when_set():
    cfg = llama_config(architectures=["LlamaForCausalLM"])
    assert model_identity(cfg)["architecture"] == "LlamaForCausalLM"


# ---------------------------------------------------------------- shapes and for_layer


@pytest.mark.parametrize("granularity,shape", [("merged", (1, 1)), ("layer", (L, 1)), ("layer_head", (L, HKV))])
def test_granularity_shape(granularity, shape):
    assert granularity_shape(granularity, L, HKV) == shape
    cb = make_codebooks(granularity)
    assert tuple(cb.key_centroids.shape) == (*shape, 4, 16, 4)
    assert cb.num_layers == L


@pytest.mark.parametrize("granularity", ["merged", "layer", "layer_head"])
def test_for_layer(granularity):
    cb = make_codebooks(granularity)
    Hc = HKV if granularity == "layer_head" else 1
    for li in range(L):
        k, v = cb.for_layer(li)
        assert tuple(k.shape) == (Hc, 4, 16, 4) and tuple(v.shape) == (Hc, 4, 16, 4)
        src = 0 if granularity == "merged" else li
        assert torch.equal(k, cb.key_centroids[src]) and torch.equal(v, cb.value_centroids[src])
    if granularity != "merged":
        assert not torch.equal(cb.for_layer(0)[0], cb.for_layer(1)[0])


@pytest.mark.parametrize("li", [L, -1, 100])
@pytest.mark.parametrize("granularity", ["layer", "layer_head"])
def test_for_layer_out_of_range(granularity, li):
    cb = make_codebooks(granularity)
    with pytest.raises(ValueError, match=f"layer_idx={li}"):
        cb.for_layer(li)


@pytest.mark.parametrize(
    "kshape,vshape,needle",
    [
        ((3, 1, 4, 16, 2), (3, 1, 4, 16, 2), "dsub=4"),  # wrong dsub
        ((3, 1, 4, 8, 4), (3, 1, 4, 8, 4), "ksub=16"),  # wrong ksub
        ((3, 1, 8, 16, 4), (3, 1, 8, 16, 4), "M=4"),  # wrong M
        ((3, 4, 16, 4), (3, 4, 16, 4), "Lg, Hg"),  # 4-d
        ((3, 1, 4, 16, 4), (3, 2, 4, 16, 4), "differ"),  # K and V differ
        ((2, 1, 4, 16, 4), (2, 1, 4, 16, 4), "needs centroids [3, 1"),  # layers do not match the model
        ((3, 2, 4, 16, 4), (3, 2, 4, 16, 4), "needs centroids [3, 1"),  # layer granularity with per-head books
    ],
    ids=["dsub", "ksub", "M", "4d", "k_ne_v", "layers", "heads"],
)
def test_wrong_centroid_shapes_raise(kshape, vshape, needle):
    good = make_codebooks("layer")
    with pytest.raises(ValueError) as ei:
        Codebooks(good.config, torch.zeros(kshape), torch.zeros(vshape), good.model, {})
    assert needle in str(ei.value)


def test_shape_check_without_model_identity_accepts_any_leading_dims():
    pq = PQConfig(head_dim=16, M=4, nbits=4)
    cb = Codebooks(pq, torch.zeros(5, 3, 4, 16, 4), torch.zeros(5, 3, 4, 16, 4))
    assert cb.for_layer(4)[0].shape == (3, 4, 16, 4)


def test_nbytes_and_to():
    cb = make_codebooks("layer_head")
    assert cb.nbytes == 2 * 2 * L * HKV * 4 * 16 * 4
    half = cb.to(dtype=torch.float16)
    assert half.key_centroids.dtype == torch.float16 and half.config == cb.config and half.model == cb.model
    assert cb.key_centroids.dtype == torch.float32  # the original is untouched


# ---------------------------------------------------------------- check_model


def test_check_model_passes_on_the_same_config():
    cb = make_codebooks()
    cb.check_model(llama_config())
    # query heads and architecture name are free: codebooks only care about the KV geometry
    cb.check_model(llama_config(num_attention_heads=8, hidden_size=128, architectures=["LlamaForCausalLM"]))


@pytest.mark.parametrize(
    "over,field",
    [
        (dict(head_dim=32), "head_dim"),
        (dict(num_key_value_heads=4), "num_key_value_heads"),
        (dict(num_key_value_heads=1), "num_key_value_heads"),
        (dict(num_hidden_layers=4), "num_hidden_layers"),
        (dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), "rope_theta"),
        (dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}), "rope_type"),
    ],
    ids=["head_dim", "kv_heads_4", "kv_heads_1", "layers", "rope_theta", "rope_type"],
)
def test_check_model_mismatch_names_the_field(over, field):
    cb = make_codebooks()
    other = llama_config(**over)
    with pytest.raises(ValueError) as ei:
        cb.check_model(other)
    msg = str(ei.value)
    assert field in msg, msg
    assert repr(cb.model[field]) in msg and repr(model_identity(other)[field]) in msg
    assert "tiny-llama" in msg
    others = {"head_dim", "num_key_value_heads", "num_hidden_layers", "rope_theta", "rope_type"} - {field}
    assert not any(f"{o}:" in msg for o in others), msg


def test_check_model_without_identity_still_checks_head_dim():
    """Codebooks saved without the model's identity: their head_dim is still checked when the cache is made, not at
    the first forward."""
    pq = PQConfig(head_dim=16, M=4, nbits=4)
    cb = Codebooks(pq, torch.zeros(L, HKV, 4, 16, 4), torch.zeros(L, HKV, 4, 16, 4))
    cb.check_model(llama_config())
    with pytest.raises(ValueError, match="another model do not fit this model \\(head_dim: codebooks 16 vs model 32\\)"):
        cb.check_model(llama_config(head_dim=32))


def test_check_model_survives_save_and_load(tmp_path):
    cb = make_codebooks()
    Codebooks.load(cb.save(tmp_path / "cb")).check_model(llama_config())
    with pytest.raises(ValueError, match="rope_theta"):
        Codebooks.load(tmp_path / "cb").check_model(llama_config(rope_parameters={"rope_type": "default", "rope_theta": 1.0}))


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("granularity", ["merged", "layer", "layer_head"])
@pytest.mark.parametrize("nbits", [4, 9], ids=lambda n: f"nbits{n}")
def test_save_load_round_trip(tmp_path, granularity, nbits):
    cb = make_codebooks(granularity, nbits=nbits, M=8)
    d = cb.save(tmp_path / "nested" / "cb")
    assert (d / TENSORS_FILE).is_file() and (d / META_FILE).is_file()
    meta = json.loads((d / META_FILE).read_text())
    assert meta["format"] == "million-codebooks" and meta["format_version"] == 1
    got = Codebooks.load(d)
    assert got.config == cb.config
    assert got.model == cb.model
    assert got.calibration == cb.calibration
    for name in ("key_centroids", "value_centroids"):
        t = getattr(got, name)
        assert t.dtype == torch.float32 and t.device.type == "cpu"
        assert torch.equal(t, getattr(cb, name))


def test_save_converts_half_to_float32_and_overwrites(tmp_path):
    cb = make_codebooks("layer")
    cb.to(dtype=torch.float16).save(tmp_path)
    got = Codebooks.load(tmp_path)
    assert got.key_centroids.dtype == torch.float32
    assert torch.equal(got.key_centroids, cb.key_centroids.half().float())
    cb.save(tmp_path)  # saving again overwrites
    assert torch.equal(Codebooks.load(tmp_path).key_centroids, cb.key_centroids)


def test_save_accepts_non_contiguous_centroids(tmp_path):
    cb = make_codebooks("layer")
    kc = cb.key_centroids.transpose(3, 4).contiguous().transpose(3, 4)  # same values, non-contiguous
    assert not kc.is_contiguous()
    Codebooks(cb.config, kc, cb.value_centroids, cb.model, cb.calibration).save(tmp_path)
    assert torch.equal(Codebooks.load(tmp_path).key_centroids, cb.key_centroids)


def test_describe_mentions_the_settings():
    text = make_codebooks("layer_head", M=8, nbits=6).describe()
    for part in ("tiny-llama", "M=8", "dsub=2", "nbits=6", "ksub=64", "layer_head", "residual", "7", "post-RoPE", "K 0.125"):
        assert part in text, part


@pytest.mark.parametrize("version", [0, 2, None, "1"], ids=lambda v: f"v{v!r}")
def test_format_version_mismatch(tmp_path, version):
    make_codebooks().save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    if version is None:
        del meta["format_version"]
    else:
        meta["format_version"] = version
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError) as ei:
        Codebooks.load(tmp_path)
    assert "format version" in str(ei.value) and repr(version).strip("'") in str(ei.value)


def test_not_a_codebook_json(tmp_path):
    make_codebooks().save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["format"] = "something-else"
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a million codebook"):
        Codebooks.load(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Codebooks.load(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "no_key_centroids"])
def test_damaged_tensor_file_raises_value_error_naming_it(tmp_path, damage):
    """What the command line turns into a one-line error (exit 2), not a safetensors traceback."""
    from safetensors.torch import save_file

    make_codebooks().save(tmp_path)
    f = tmp_path / TENSORS_FILE
    raw = f.read_bytes()
    if damage == "truncated":
        f.write_bytes(raw[: len(raw) // 2])
    elif damage == "random":
        f.write_bytes(bytes(range(256)) * 8)
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        save_file({"value_centroids": torch.zeros(1)}, str(f))
    with pytest.raises(ValueError) as ei:
        Codebooks.load(tmp_path)
    assert TENSORS_FILE in str(ei.value) and "million calibrate" in str(ei.value)
    if damage == "no_key_centroids":
        assert "lacks key_centroids" in str(ei.value)


@pytest.mark.parametrize("meta", ["[1, 2]", '{"format": "million-codebooks", "format_version": VERSION}'])
def test_damaged_json_structure_raises_value_error(tmp_path, meta):
    make_codebooks().save(tmp_path)
    (tmp_path / META_FILE).write_text(meta.replace("VERSION", str(FORMAT_VERSION)))
    with pytest.raises(ValueError, match="not a million codebook file|has no 'config' object"):
        Codebooks.load(tmp_path)


def test_config_version_mismatch_in_meta(tmp_path):
    make_codebooks().save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["config"]["version"] = 99
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 99"):
        Codebooks.load(tmp_path)


def test_missing_dir_raises_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "no" / "such-codebooks"
    with pytest.raises(FileNotFoundError) as ei:
        Codebooks.load(missing)
    assert str(missing) in str(ei.value)


@pytest.mark.parametrize("remove", [META_FILE, TENSORS_FILE])
def test_dir_without_codebook_files_raises_file_not_found(tmp_path, remove):
    make_codebooks().save(tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(FileNotFoundError) as ei:
        Codebooks.load(tmp_path)
    assert str(tmp_path) in str(ei.value) and remove in str(ei.value)


def test_load_on_a_file_raises_file_not_found(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(FileNotFoundError, match="file.txt"):
        Codebooks.load(f)


def test_saved_files_share_one_mode(tmp_path):
    d = make_codebooks().save(tmp_path / "cb")
    assert (d / TENSORS_FILE).stat().st_mode & 0o777 == (d / META_FILE).stat().st_mode & 0o777
