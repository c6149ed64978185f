"""PQConfig: validation at the boundary (ValueError naming the bad value and what is allowed),
derived fields, from_bits, and dict / JSON round trips."""

import json

import pytest
import torch

from million import PQConfig
from million.config import CONFIG_VERSION, GRANULARITIES


# (kwargs, substrings the message must contain: the bad value and what is allowed)
BAD = {
    "M_not_dividing": (dict(head_dim=64, M=24), ["M=24", "head_dim=64", "allowed", "[1, 2, 4, 8, 16, 32, 64]"]),
    "M_zero": (dict(head_dim=64, M=0), ["M=0", "allowed"]),
    "M_negative": (dict(head_dim=64, M=-8), ["M=-8", "allowed"]),
    "M_above_head_dim": (dict(head_dim=16, M=32), ["M=32", "head_dim=16", "allowed"]),
    "nbits_3": (dict(head_dim=64, M=32, nbits=3), ["nbits=3", "4..12"]),
    "nbits_13": (dict(head_dim=64, M=32, nbits=13), ["nbits=13", "4..12"]),
    "granularity_foo": (dict(head_dim=64, M=32, granularity="foo"), ["'foo'", *GRANULARITIES]),
    "granularity_case": (dict(head_dim=64, M=32, granularity="Layer"), ["'Layer'", *GRANULARITIES]),
    "residual_0": (dict(head_dim=64, M=32, residual_length=0), ["residual_length=0", ">= 1"]),
    "residual_negative": (dict(head_dim=64, M=32, residual_length=-3), ["residual_length=-3", ">= 1"]),
    "sink_negative": (dict(head_dim=64, M=32, sink_length=-1), ["sink_length=-1", ">= 0"]),
    "head_dim_0": (dict(head_dim=0, M=1), ["head_dim", "0", "positive"]),
    "version_2": (dict(head_dim=64, M=32, version=2), ["version 2", str(CONFIG_VERSION)]),
    "M_float": (dict(head_dim=64, M=32.0), ["M", "32.0", "integer"]),
    "M_str": (dict(head_dim=64, M="32"), ["M", "'32'", "integer"]),
    "M_bool": (dict(head_dim=64, M=True), ["M", "True", "integer"]),
    "nbits_float": (dict(head_dim=64, M=32, nbits=8.0), ["nbits", "8.0", "integer"]),
    "head_dim_float": (dict(head_dim=64.0, M=32), ["head_dim", "64.0", "integer"]),
    "residual_float": (dict(head_dim=64, M=32, residual_length=12.5), ["residual_length", "12.5", "integer"]),
    "residual_none": (dict(head_dim=64, M=32, residual_length=None), ["residual_length", "None", "integer"]),
}


@pytest.mark.parametrize("kwargs,needles", list(BAD.values()), ids=list(BAD))
def test_bad_values_raise_value_error_naming_value_and_allowed(kwargs, needles):
    with pytest.raises(ValueError) as ei:
        PQConfig(**kwargs)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, f"{n!r} missing from {msg!r}"
    assert "\n" not in msg


@pytest.mark.parametrize("nbits", [4, 12], ids=lambda n: f"nbits{n}")
def test_nbits_range_ends_are_allowed(nbits):
    assert PQConfig(head_dim=64, M=32, nbits=nbits).ksub == 2**nbits


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_every_granularity_is_allowed(granularity):
    assert PQConfig(head_dim=64, M=32, granularity=granularity).granularity == granularity


def test_defaults():
    c = PQConfig(head_dim=128, M=64)
    assert (c.nbits, c.residual_length, c.granularity, c.sink_length, c.version) == (8, 128, "layer", 0, CONFIG_VERSION)


@pytest.mark.parametrize(
    "head_dim,M,nbits,dsub,ksub,dtype,bpe",
    [
        (64, 32, 8, 2, 256, torch.uint8, 4.0),
        (64, 16, 8, 4, 256, torch.uint8, 2.0),
        (64, 64, 4, 1, 16, torch.uint8, 4.0),
        (128, 64, 9, 2, 512, torch.uint16, 4.5),
        (16, 4, 10, 4, 1024, torch.uint16, 2.5),
        (96, 1, 12, 96, 4096, torch.uint16, 0.125),
        (64, 1, 6, 64, 64, torch.uint8, 6 / 64),
    ],
    ids=lambda v: str(v).replace("torch.", ""),
)
def test_derived_fields(head_dim, M, nbits, dsub, ksub, dtype, bpe):
    c = PQConfig(head_dim=head_dim, M=M, nbits=nbits)
    assert (c.dsub, c.ksub) == (dsub, ksub)
    assert c.dsub * c.M == head_dim
    assert c.code_dtype == dtype
    assert c.bits_per_element == pytest.approx(bpe)
    word = 1 if dtype == torch.uint8 else 2
    assert c.code_bytes_per_element == pytest.approx(word / dsub)


def test_derived_fields_are_not_constructor_arguments():
    with pytest.raises(TypeError):
        PQConfig(head_dim=64, M=32, dsub=2)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize(
    "bits,nbits,m_ratio",
    [(4, 8, 1 / 2), (2, 8, 1 / 4), (1, 8, 1 / 8), (8, 8, 1), (4, 4, 1), (2, 4, 1 / 2)],
    ids=lambda v: str(v),
)
def test_from_bits(head_dim, bits, nbits, m_ratio):
    c = PQConfig.from_bits(head_dim, bits, nbits=nbits)
    assert c.M == int(head_dim * m_ratio)
    assert c.nbits == nbits
    assert c.bits_per_element == pytest.approx(bits)


def test_from_bits_default_nbits_is_8_and_passes_kwargs():
    c = PQConfig.from_bits(64, 2, granularity="merged", residual_length=32, sink_length=4)
    assert (c.M, c.nbits, c.granularity, c.residual_length, c.sink_length) == (16, 8, "merged", 32, 4)
    assert isinstance(c.M, int)


def test_from_bits_fractional_bits():
    c = PQConfig.from_bits(64, 0.5, nbits=8)  # M = 4 subspaces of 16 dims
    assert (c.M, c.dsub) == (4, 16)
    assert c.bits_per_element == pytest.approx(0.5)


@pytest.mark.parametrize(
    "head_dim,bits,nbits",
    [
        (64, 3, 8),  # M = 24 is whole but does not divide 64
        (64, 0.1, 8),  # M = 0.8
        (64, 0, 8),  # M = 0
        (64, -4, 8),  # M = -32
        (64, 32, 8),  # M = 256 > head_dim
        (64, 5, 8),  # M = 40 does not divide 64
        (96, 4, 7),  # M = 54.857...
    ],
    ids=lambda v: str(v),
)
def test_from_bits_impossible_bits_raise_naming_bits(head_dim, bits, nbits):
    """The user asked for ``bits``; the error must say which bits value is impossible."""
    with pytest.raises(ValueError) as ei:
        PQConfig.from_bits(head_dim, bits, nbits=nbits)
    msg = str(ei.value)
    assert f"bits={bits}" in msg, msg


def test_from_bits_bad_nbits_still_raises():
    with pytest.raises(ValueError, match="nbits=13"):
        PQConfig.from_bits(64, 13 / 4, nbits=13)  # M = 16 divides 64, nbits out of range


def test_to_dict_from_dict_round_trip_through_json():
    c = PQConfig(head_dim=96, M=12, nbits=10, residual_length=17, granularity="layer_head", sink_length=3)
    d = c.to_dict()
    assert "dsub" not in d and "ksub" not in d
    assert d == {"head_dim": 96, "M": 12, "nbits": 10, "residual_length": 17, "granularity": "layer_head", "sink_length": 3, "version": CONFIG_VERSION}
    c2 = PQConfig.from_dict(json.loads(json.dumps(d)))
    assert c2 == c
    assert (c2.dsub, c2.ksub) == (8, 1024)


def test_from_dict_tolerates_derived_fields():
    c = PQConfig(head_dim=64, M=16)
    d = {**c.to_dict(), "dsub": c.dsub, "ksub": c.ksub}
    assert PQConfig.from_dict(d) == c


def test_from_dict_unknown_field_raises_naming_it_and_allowed():
    d = {**PQConfig(head_dim=64, M=16).to_dict(), "n_bits": 8, "zzz": 1}
    with pytest.raises(ValueError) as ei:
        PQConfig.from_dict(d)
    msg = str(ei.value)
    assert "n_bits" in msg and "zzz" in msg
    for allowed in ("head_dim", "M", "nbits", "residual_length", "granularity", "sink_length"):
        assert allowed in msg


def test_from_dict_validates():
    d = {**PQConfig(head_dim=64, M=16).to_dict(), "M": 24}
    with pytest.raises(ValueError, match="M=24"):
        PQConfig.from_dict(d)


def test_from_dict_version_mismatch():
    d = {**PQConfig(head_dim=64, M=16).to_dict(), "version": CONFIG_VERSION + 1}
    with pytest.raises(ValueError, match="version"):
        PQConfig.from_dict(d)


def test_repr_mentions_every_field():
    r = repr(PQConfig(head_dim=64, M=16, nbits=6))
    for part in ("head_dim=64", "M=16", "nbits=6", "dsub=4", "ksub=64", "granularity='layer'"):
        assert part in r
