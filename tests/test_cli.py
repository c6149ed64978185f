"""The ``million`` command line, run in-process through ``million.cli.main`` (plus one run of the
console script): bad input ends with exit status 2 and exactly one stderr line; calibrate / info /
generate work end to end on a tiny random Llama saved in a temporary directory (no real model)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from million import PQConfig
from million.cli import main
from million.codebook import Codebooks
from million.models import ModelNotFoundError, resolve_model

VENV_SCRIPT = Path(sys.executable).with_name("million")
TINY_HEAD_DIM = 64


def run(argv, capsys):
    """(exit status, stdout, stderr) of ``million argv`` run in this process."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm bars (transformers' "Loading weights") are not error output


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not PROGRESS_BAR.search(ln)]
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{err}"
    return lines[0]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A local HF model directory: random 2-layer Llama with head_dim 64 and a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-llama")
    vocab = {"[UNK]": 0, "[EOS]": 1, **{f"w{i}": i + 2 for i in range(126)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="[EOS]").save_pretrained(d)
    cfg = LlamaConfig(
        vocab_size=128, hidden_size=128, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=TINY_HEAD_DIM, max_position_embeddings=2048, architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("text") / "calib.txt"
    g = torch.Generator().manual_seed(0)
    p.write_text(" ".join(f"w{int(i)}" for i in torch.randint(0, 126, (2000,), generator=g)), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def tiny_codebooks_dir(tmp_path_factory):
    from transformers import LlamaConfig

    from million.codebook import model_identity

    cfg = LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    pq = PQConfig(head_dim=16, M=8, nbits=6, granularity="layer_head", residual_length=32)
    kc = torch.randn(2, 2, 8, 64, 2)
    d = tmp_path_factory.mktemp("cb") / "codebooks"
    Codebooks(pq, kc, kc + 1, {**model_identity(cfg), "name": "tiny"}, {"text": "t", "tokens": 9}).save(d)
    return d


# ---------------------------------------------------------------- bad input: exit 2, one line


@pytest.mark.parametrize("cmd", ["calibrate", "generate"])
def test_bad_model_path(cmd, tmp_path, capsys):
    bad = str(tmp_path / "no-such-model")
    argv = ["calibrate", "--model", bad, "--out", str(tmp_path / "out")] if cmd == "calibrate" else ["generate", "hello", "--model", bad, "--codebooks", str(tmp_path)]
    rc, out, err = run(argv, capsys)
    assert rc == 2
    line = one_line(err)
    assert line.startswith("million: error:") and bad in line
    assert out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,named", [(["--pool", "15"], "--pool"), (["--recent", "0.2", "--pool-share", "0.15"], "--recent, --pool-share")])
def test_generate_refuses_eviction_options_without_keep(flags, named, tmp_path, capsys):
    # they would be silently ignored: eviction runs only with --keep
    rc, out, err = run(["generate", "hello", "--model", str(tmp_path / "m"), "--codebooks", str(tmp_path)] + flags, capsys)
    assert rc == 2 and out == ""
    line = one_line(err)
    assert f"{named}: eviction options" in line and "--keep" in line


def test_bad_model_path_console_script(tmp_path):
    bad = str(tmp_path / "missing-model-dir")
    cmd = [str(VENV_SCRIPT)] if VENV_SCRIPT.is_file() else [sys.executable, "-m", "million.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([*cmd, "calibrate", "--model", bad, "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert line.startswith("million: error:") and bad in line
    assert r.stdout == ""


def test_model_file_that_is_not_gguf(tmp_path, capsys):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0")
    rc, _, err = run(["calibrate", "--model", str(f), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and ".gguf" in one_line(err) and str(f) in one_line(err)


def test_model_dir_without_config(tmp_path, capsys):
    rc, _, err = run(["calibrate", "--model", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "config.json" in one_line(err)


def test_info_missing_dir(tmp_path, capsys):
    missing = str(tmp_path / "nothing-here")
    rc, out, err = run(["info", missing], capsys)
    assert rc == 2 and out == ""
    line = one_line(err)
    assert line.startswith("million: error:") and missing in line


def test_info_on_a_dir_without_codebooks(tmp_path, capsys):
    rc, _, err = run(["info", str(tmp_path)], capsys)
    assert rc == 2 and "million calibrate" in one_line(err)


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["--granularity", "foo"], ["--granularity", "'foo'", "merged", "layer", "layer_head"]),
        (["--tokens", "0"], ["--tokens", "'0'"]),
        (["--samples", "-3"], ["--samples", "'-3'"]),
        (["--iters", "two"], ["--iters", "'two'"]),
        (["--bits", "four"], ["--bits", "'four'"]),
    ],
    ids=["granularity_foo", "tokens_0", "samples_negative", "iters_word", "bits_word"],
)
def test_calibrate_argument_errors(extra, needles, tmp_path, capsys):
    rc, out, err = run(["calibrate", "--out", str(tmp_path / "o"), *extra], capsys)
    assert rc == 2 and out == ""
    line = one_line(err)
    assert "error" in line
    for n in needles:
        assert n in line, line


def test_missing_required_arguments(capsys):
    rc, _, err = run(["calibrate"], capsys)
    assert rc == 2 and "--out" in one_line(err)
    rc, _, err = run([], capsys)
    assert rc == 2 and one_line(err)
    rc, _, err = run(["frobnicate"], capsys)
    assert rc == 2 and "frobnicate" in one_line(err)


def test_device_cuda_without_gpu(tiny_model_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--device cuda" in one_line(err)


def test_out_not_empty_without_force(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--out", str(tmp_path)], capsys)
    assert rc == 2 and "--force" in one_line(err)
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_missing_text_file(tiny_model_dir, tmp_path, capsys):
    missing = str(tmp_path / "no-text.txt")
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--text", missing, "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and missing in one_line(err)


@pytest.mark.parametrize("extra", [["--bits", "3"], ["--bits", "4", "--nbits", "13"], ["--bits", "0.1"]], ids=["bits3", "nbits13", "bits0.1"])
def test_impossible_pq_settings_give_one_line(extra, tiny_model_dir, text_file, tmp_path, capsys):
    """head_dim 64: 3 bits -> M = 24 does not divide 64; nbits 13 is out of range."""
    out_dir = tmp_path / "o"
    rc, out, err = run(["calibrate", "--model", str(tiny_model_dir), "--text", str(text_file), "--out", str(out_dir), *extra], capsys)
    assert rc == 2 and out == ""
    line = one_line(err)
    assert line.startswith("million") and "error:" in line
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_impossible_bits_fail_before_loading_text_or_model(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """The PQ settings are checked before the slow work (the default text is fetched from a registry and the
    model loaded): ``--bits 3`` must not wait for either, nor fail with their errors instead."""
    import million.data
    import million.models

    def no_text(*a, **k):
        raise RuntimeError("load_text was called before the PQ settings were checked")

    def no_model(*a, **k):
        raise RuntimeError("load_model was called before the PQ settings were checked")

    monkeypatch.setattr(million.data, "load_text", no_text)
    monkeypatch.setattr(million.models, "load_model", no_model)
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--bits", "3", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2
    line = one_line(err)
    assert "called before" not in line, line
    assert "bits" in line or "M=24" in line, line


# ---------------------------------------------------------------- info / calibrate / generate that work


def test_info_prints_the_settings(tiny_codebooks_dir, capsys):
    rc, out, err = run(["info", str(tiny_codebooks_dir)], capsys)
    assert rc == 0
    for part in ("M=8", "nbits=6", "granularity", "layer_head", "tiny", "residual"):
        assert part in out, part


def test_calibrate_info_generate_on_a_tiny_model(tiny_model_dir, text_file, tmp_path, capsys):
    out_dir = tmp_path / "cb"
    rc, out, err = run(
        ["calibrate", "--model", str(tiny_model_dir), "--text", str(text_file), "--bits", "2", "--nbits", "4",
         "--tokens", "512", "--window", "256", "--samples", "256", "--iters", "2", "--residual", "4",
         "--granularity", "layer_head", "--device", "cpu", "--out", str(out_dir)],
        capsys,
    )
    assert rc == 0, err
    assert "saved to" in out and "M=32" in out
    cb = Codebooks.load(out_dir)
    assert (cb.config.M, cb.config.nbits, cb.config.granularity, cb.config.residual_length) == (32, 4, "layer_head", 4)
    assert cb.key_centroids.shape == (2, 1, 32, 16, 2)
    assert cb.calibration["tokens"] == 512 and cb.calibration["text"] == str(text_file)

    rc, out, _ = run(["info", str(out_dir)], capsys)
    assert rc == 0 and "M=32" in out and "nbits=4" in out and "layer_head" in out

    # a second calibrate into the same directory needs --force
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--text", str(text_file), "--out", str(out_dir)], capsys)
    assert rc == 2 and "--force" in one_line(err)

    prompt = " ".join(f"w{i}" for i in range(1, 15))
    rc, out, err = run(
        ["generate", prompt, "--raw", "--model", str(tiny_model_dir), "--codebooks", str(out_dir), "--max-new-tokens", "6",
         "--residual", "2", "--device", "cpu"],
        capsys,
    )
    assert rc == 0, err
    # the baseline in the model's dtype (float32 on the CPU), with what fp16 would hold
    assert "--- float32 KV cache" in out and "fp16 would hold" in out and "--- million PQ KV cache" in out
    assert "bytes/token" in out
    assert "PQ cache now:" in out

    # with eviction: half of the code positions kept, fewer bits held
    rc, out2, err = run(
        ["generate", prompt, "--raw", "--model", str(tiny_model_dir), "--codebooks", str(out_dir), "--max-new-tokens", "6",
         "--residual", "2", "--device", "cpu", "--keep", "0.5"],
        capsys,
    )
    assert rc == 0, err
    assert "eviction keeps 0.5" in out2
    held = lambda o: float(o.split("bits/element held")[0].split(",")[-1])  # noqa: E731
    assert held(out2) < held(out)
    # several prompts: one left-padded batch, a continuation per prompt from each cache
    rc, out3, err = run(
        ["generate", prompt, "w3 w4", "--raw", "--model", str(tiny_model_dir), "--codebooks", str(out_dir),
         "--max-new-tokens", "6", "--residual", "2", "--device", "cpu"],
        capsys,
    )
    assert rc == 0, err
    assert "2 prompts of 14, 2 tokens (left-padded)" in out3
    for cache in out3.split("--- ")[1:]:
        assert "\n[1] " in cache and "\n[2] " in cache
    rc, out4, err = run(  # the same batch with eviction: the sequences keep their own counts
        ["generate", prompt, "w3 w4", "--raw", "--model", str(tiny_model_dir), "--codebooks", str(out_dir),
         "--max-new-tokens", "6", "--residual", "2", "--device", "cpu", "--keep", "0.5"],
        capsys,
    )
    assert rc == 0, err
    assert "eviction keeps 0.5" in out4 and "\n[2] " in out4.split("--- million PQ")[1]
    rc, _, err = run(["generate", prompt, "--raw", "--model", str(tiny_model_dir), "--codebooks", str(out_dir), "--keep", "1.5",
                      "--device", "cpu"], capsys)
    assert rc == 2 and "keep=1.5" in one_line(err) and "(0, 1]" in one_line(err)


def _calibrate_layer_head(model_dir, text_file, out_dir, extra, capsys) -> Codebooks:
    """Tiny 2-bit per-layer-head calibration with ``extra`` arguments; returns the saved codebooks."""
    rc, out, err = run(
        ["calibrate", "--model", str(model_dir), "--text", str(text_file), "--bits", "2", "--nbits", "4",
         "--tokens", "512", "--window", "256", "--samples", "256", "--iters", "2", "--residual", "4", "--sinks", "1",
         "--granularity", "layer_head", *extra, "--device", "cpu", "--out", str(out_dir)],
        capsys,
    )
    assert rc == 0, err
    return Codebooks.load(out_dir)


def _generate_ok(model_dir, codebooks_dir, capsys) -> None:
    rc, out, err = run(["generate", " ".join(f"w{i}" for i in range(1, 15)), "--raw", "--model", str(model_dir),
                        "--codebooks", str(codebooks_dir), "--max-new-tokens", "6", "--residual", "2", "--device", "cpu"], capsys)
    assert rc == 0, err
    assert "PQ cache now:" in out


def test_calibrate_with_metric_transform_then_generate(tiny_model_dir, text_file, tmp_path, capsys):
    out_dir = tmp_path / "cbm"
    cb = _calibrate_layer_head(tiny_model_dir, text_file, out_dir, ["--transform", "metric"], capsys)
    assert cb.transforms is not None and cb.transforms["key"].shape == (2, 1, 64, 64)
    assert cb.config.sink_length == 1 and cb.calibration["variant"]["transform"] == "metric"
    _generate_ok(tiny_model_dir, out_dir, capsys)
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--transform", "metric", "--pre-rope", "--out", str(tmp_path / "x")], capsys)
    assert rc == 2 and "--pre-rope" in one_line(err)


def test_calibrate_with_balanced_rotation_then_generate(tiny_model_dir, text_file, tmp_path, capsys):
    """--rotation balanced: the PCA rotation is folded into the stored transforms (keys and values), the codes
    keep one width, and the cache serves them; bad combinations are refused before any slow work."""
    out_dir = tmp_path / "cbr"
    cb = _calibrate_layer_head(tiny_model_dir, text_file, out_dir, ["--rotation", "balanced", "--transform", "none"], capsys)
    assert cb.calibration["variant"]["alloc"] == "balanced" and cb.calibration["variant"]["transform"] == "none"
    k, ki = cb.transforms["key"].float(), cb.transforms["key_inverse"].float()
    eye = torch.eye(64).expand_as(k)
    torch.testing.assert_close(k.transpose(-1, -2) @ k, eye, rtol=0, atol=1e-3)  # a rotation, no scaling
    torch.testing.assert_close(k @ ki, eye, rtol=0, atol=1e-3)
    assert not torch.allclose(k, eye, atol=1e-2)
    _generate_ok(tiny_model_dir, out_dir, capsys)
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--rotation", "balanced", "--granularity", "layer",
                      "--out", str(tmp_path / "x")], capsys)
    assert rc == 2 and "--granularity layer_head" in one_line(err) and "got layer" in one_line(err)
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--rotation", "balanced-keys", "--pre-rope",
                      "--granularity", "layer_head", "--out", str(tmp_path / "y")], capsys)
    assert rc == 2 and "--pre-rope" in one_line(err)


def _calibrate_tiny(model_dir, text_file, out_dir, extra, capsys) -> Codebooks:
    """Tiny 2-bit calibration with the recipe's defaults and ``extra`` arguments; returns the saved codebooks."""
    rc, out, err = run(
        ["calibrate", "--model", str(model_dir), "--text", str(text_file), "--bits", "2", "--nbits", "4", "--tokens", "512",
         "--window", "256", "--samples", "256", "--iters", "2", "--residual", "4", *extra, "--device", "cpu", "--out", str(out_dir)],
        capsys,
    )
    assert rc == 0, err
    return Codebooks.load(out_dir)


def test_calibrate_default_recipe_is_the_recommended_one(tiny_model_dir, text_file, tmp_path, capsys):
    """No recipe flags: per-layer-head codebooks, one sink, the metric transform and the key rotation."""
    cb = _calibrate_tiny(tiny_model_dir, text_file, tmp_path / "rec", [], capsys)
    assert (cb.config.granularity, cb.config.sink_length) == ("layer_head", 1)
    cal = cb.calibration
    assert cal["recipe"] == "recommended" and (cal["transform"], cal["rotation"]) == ("metric", "balanced-keys")
    assert (cal["variant"]["transform"], cal["variant"]["alloc"]) == ("metric", "balanced_k")
    assert cal["tokens"] == 512 and cal["window"] == 256 and cal["iters"] == 2 and 0 <= cal["distortion_k"] < 1
    assert cb.transforms is not None and cb.key_centroids.shape == (2, 1, 32, 16, 2)  # [L, H_kv, M, ksub, dsub]
    _generate_ok(tiny_model_dir, tmp_path / "rec", capsys)
    rc, out, _ = run(["info", str(tmp_path / "rec")], capsys)
    assert rc == 0 and "balanced rotation (keys)" in out


def test_calibrate_default_recipe_with_finetune(tiny_model_dir, text_file, tmp_path, capsys):
    """End-to-end tuning on the recommended recipe: the tuned centroids keep the transforms and the rotation."""
    cb = _calibrate_tiny(tiny_model_dir, text_file, tmp_path / "ft", ["--finetune-steps", "2", "--finetune-window", "128"], capsys)
    assert cb.calibration["finetune"]["steps"] == 2
    assert (cb.calibration["variant"]["transform"], cb.calibration["variant"]["alloc"]) == ("metric", "balanced_k")
    assert cb.transforms is not None and cb.config.sink_length == 1
    _generate_ok(tiny_model_dir, tmp_path / "ft", capsys)


@pytest.mark.parametrize("extra,want", [
    (["--recipe", "plain"], ("layer", 0, None)),  # the raw post-RoPE vectors, per layer
    (["--pre-rope"], ("layer_head", 1, None)),  # the recipe's transform and rotation give way to --pre-rope
    (["--granularity", "layer"], ("layer", 1, "metric")),  # the rotation gives way to a shared codebook
    (["--recipe", "plain", "--sinks", "2", "--transform", "metric"], ("layer", 2, "metric")),  # explicit flags win
])
def test_calibrate_recipe_and_explicit_flags(tiny_model_dir, text_file, tmp_path, capsys, extra, want):
    cb = _calibrate_tiny(tiny_model_dir, text_file, tmp_path / "cb", extra, capsys)
    granularity, sinks, transform = want
    assert (cb.config.granularity, cb.config.sink_length) == (granularity, sinks)
    assert (cb.transforms is None) == (transform is None)
    if transform is not None:
        assert cb.calibration["variant"]["transform"] == transform and cb.calibration["variant"]["alloc"] == "uniform"
    assert cb.calibration["pre_rope"] is ("--pre-rope" in extra)


def test_calibrate_choices_match_the_library():
    """The parser's choices (kept in cli.py so that `million --help` does not import torch) are the library's."""
    from million import calibrate as lib
    from million import cli
    from million.config import GRANULARITIES

    assert set(cli.RECIPES) == set(lib.RECIPES) and set(cli.TRANSFORMS) == set(lib.TRANSFORMS)
    assert set(cli.ROTATIONS) == set(lib.ROTATIONS) and cli.GRANULARITIES == GRANULARITIES


@pytest.mark.parametrize("extra,needle", [
    (["--recipe", "best"], "invalid choice: 'best'"),
    (["--sinks", "-1"], "--sinks must be a non-negative integer, got '-1'"),
    (["--rotation", "balanced", "--pre-rope"], "--rotation balanced works on post-RoPE keys; drop --pre-rope"),
    (["--transform", "hadamard", "--pre-rope"], "--transform hadamard works on post-RoPE keys"),
    (["--rotation", "balanced-keys", "--granularity", "merged"], "it needs --granularity layer_head, got merged"),
])
def test_calibrate_recipe_errors(tiny_model_dir, tmp_path, capsys, extra, needle):
    rc, out, err = run(["calibrate", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), *extra], capsys)
    assert rc == 2 and out == "" and needle in one_line(err), err


def test_generate_with_codebooks_of_another_model(tiny_model_dir, tiny_codebooks_dir, capsys):
    rc, out, err = run(["generate", "w1 w2", "--raw", "--model", str(tiny_model_dir), "--codebooks", str(tiny_codebooks_dir), "--device", "cpu"], capsys)
    assert rc == 2
    line = one_line(err)
    assert "head_dim" in line and "do not fit" in line


# ---------------------------------------------------------------- resolve_model


def test_resolve_model_paths(tiny_model_dir, tmp_path):
    src = resolve_model(str(tiny_model_dir))
    assert src.path == str(tiny_model_dir) and src.gguf_file is None and src.kwargs() == {}
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    src = resolve_model(str(g))
    assert (src.name, src.path, src.gguf_file) == ("m", str(tmp_path), "m.gguf")
    assert src.kwargs() == {"gguf_file": "m.gguf"}
    with pytest.raises(ModelNotFoundError) as ei:
        resolve_model("definitely-not-a-model")
    assert isinstance(ei.value, ValueError) and "smollm2" in str(ei.value)


def test_calibrate_with_finetune_then_info_and_generate(tiny_model_dir, text_file, tmp_path, capsys):
    out_dir = tmp_path / "cbt"
    rc, out, err = run(
        ["calibrate", "--model", str(tiny_model_dir), "--text", str(text_file), "--bits", "2", "--nbits", "4",
         "--tokens", "512", "--window", "256", "--samples", "256", "--iters", "2", "--residual", "4",
         "--recipe", "plain", "--finetune-steps", "3", "--finetune-window", "128", "--device", "cpu", "--out", str(out_dir)],
        capsys,
    )
    assert rc == 0, err
    assert "tuned the centroids: 3 steps on 4 windows of 128 tokens" in err
    cb = Codebooks.load(out_dir)
    ft = cb.calibration["finetune"]
    assert (ft["steps"], ft["windows"], ft["window"], ft["lr"]) == (3, 4, 128, 5e-3)
    assert cb.transforms is None and cb.key_centroids.shape == (2, 1, 32, 16, 2)  # --recipe plain: plain codebooks
    rc, out, _ = run(["info", str(out_dir)], capsys)
    assert rc == 0 and "tuned        : 3 steps" in out and f"{text_file}, 512 tokens, 256 samples/codebook, 2 iters" in out
    rc, out, err = run(["generate", " ".join(f"w{i}" for i in range(1, 15)), "--raw", "--model", str(tiny_model_dir),
                        "--codebooks", str(out_dir), "--max-new-tokens", "6", "--residual", "2", "--device", "cpu"], capsys)
    assert rc == 0 and "PQ cache now:" in out, err


@pytest.mark.parametrize("extra,needle", [
    (["--finetune-steps", "-1"], "--finetune-steps must be a non-negative integer, got '-1'"),
    (["--finetune-steps", "2", "--pre-rope"], "--pre-rope"),
    (["--finetune-lr", "0"], "--finetune-lr must be > 0, got 0.0"),
    (["--finetune-window", "0"], "--finetune-window must be a positive integer, got '0'"),
])
def test_calibrate_finetune_argument_errors(tiny_model_dir, tmp_path, capsys, extra, needle):
    rc, out, err = run(["calibrate", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), *extra], capsys)
    assert rc == 2 and out == "" and needle in one_line(err), err


def test_calibrate_finetune_needs_a_full_window(tiny_model_dir, text_file, tmp_path, capsys):
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--text", str(text_file), "--tokens", "100", "--window", "256", "--bits", "2", "--nbits", "4",
                      "--samples", "64", "--iters", "1", "--finetune-steps", "1", "--finetune-window", "200", "--device", "cpu",
                      "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "one full 200-token window" in one_line(err), err


# ---------------------------------------------------------------- more bad input, checked before the slow work


def test_calibrate_out_that_is_a_file(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "x"
    f.write_text("")
    for force in ([], ["--force"]):
        rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--out", str(f), *force], capsys)
        assert rc == 2 and "is a file, not a directory" in one_line(err)
    assert f.is_file()


def test_calibrate_samples_below_the_centroid_count(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import million.models

    monkeypatch.setattr(million.models, "load_model", lambda *a, **k: pytest.fail("model loaded before the check"))
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--samples", "100", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--samples 100 is fewer than the 256 centroids" in one_line(err)


def test_calibrate_nbits_out_of_range_names_the_range(capsys, tmp_path):
    rc, _, err = run(["calibrate", "--nbits", "13", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--nbits '13' is out of range; allowed: integers 4..12" in one_line(err)


def test_calibrate_on_a_text_shorter_than_tokens_warns_and_records_the_window(tiny_model_dir, text_file, tmp_path, capsys):
    out_dir = tmp_path / "cb"
    with pytest.warns(UserWarning, match="has 2000 tokens, fewer than tokens=4096"):
        rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--text", str(text_file), "--bits", "2", "--nbits", "4",
                          "--tokens", "4096", "--window", "2048", "--samples", "256", "--iters", "1", "--residual", "4",
                          "--recipe", "plain", "--device", "cpu", "--out", str(out_dir)], capsys)
    assert rc == 0, err
    cal = Codebooks.load(out_dir).calibration
    assert cal["tokens"] == 2000 and cal["window"] == 2000


def test_generate_sampling_flags_need_sample(tmp_path, capsys):
    rc, _, err = run(["generate", "hi", "--model", str(tmp_path / "m"), "--codebooks", str(tmp_path), "--temperature", "0.5"],
                     capsys)
    assert rc == 2 and "need --sample" in one_line(err)
    rc, _, err = run(["generate", "hi", "--model", str(tmp_path / "m"), "--codebooks", str(tmp_path), "--sample", "--top-p", "7"],
                     capsys)
    assert rc == 2 and "--top-p 7 is out of range" in one_line(err)


def test_info_on_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    rc, _, err = run(["info", str(f)], capsys)
    assert rc == 2 and "is a file, not a codebook directory" in one_line(err)


def test_eval_bad_values_before_the_run(tmp_path, capsys):
    rc, _, err = run(["eval", "ppl", "--json", str(tmp_path)], capsys)
    assert rc == 2 and "--json" in one_line(err) and "is a directory" in one_line(err)
    rc, _, err = run(["eval", "needle", "--max-new-tokens", "0"], capsys)
    assert rc == 2 and "--max-new-tokens must be a positive integer" in one_line(err)
    rc, _, err = run(["eval", "ppl", "--bits", "x"], capsys)
    assert rc == 2 and "--bits 'x' is not a number" in one_line(err)
    rc, _, err = run(["eval", "ppl", "--threads", "0"], capsys)
    assert rc == 2 and "--threads must be a positive integer" in one_line(err)


def test_missing_subcommand_lists_the_choices(capsys):
    rc, _, err = run([], capsys)
    assert rc == 2 and "{calibrate,generate,info,eval}" in one_line(err)
    rc, _, err = run(["eval"], capsys)
    assert rc == 2 and "{ppl,needle}" in one_line(err)


def test_text_that_is_not_utf8_names_the_file(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "bin.txt"
    f.write_bytes(b"\xb5\xff\x00 abc")
    rc, _, err = run(["calibrate", "--model", str(tiny_model_dir), "--text", str(f), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and str(f) in one_line(err) and "is not UTF-8" in one_line(err)


def test_info_without_a_model_identity(tmp_path, capsys):
    pq = PQConfig(head_dim=16, M=8, nbits=6)
    Codebooks(pq, torch.zeros(2, 1, 8, 64, 2), torch.zeros(2, 1, 8, 64, 2)).save(tmp_path / "cb")
    rc, out, _ = run(["info", str(tmp_path / "cb")], capsys)
    assert rc == 0 and "not recorded" in out and "None" not in out.split("\n")[0]
