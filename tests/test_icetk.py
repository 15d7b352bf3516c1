"""icetk: the hierarchical VQ-VAE at tiny width (random weights) and the icetk text preset."""

from __future__ import annotations

import os
import re

import pytest
import sentencepiece as spm
import torch

from cogframe.errors import ConfigError, DataError, ShapeError
from cogframe.plugins import get_registries
from cogframe.core.model.icetk_vqvae import HVQVAE
from cogframe.plugins.icetk import ICETK_SPECIAL_TOKENS, IceImageTokenizer

TINY = {"channels": 32, "z_channels": 32, "codebook_size": 64}


@pytest.fixture(scope="module")
def full_size_keys():
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in HVQVAE().state_dict().items()}


def test_state_dict_keys_follow_spec_prefixes(full_size_keys):
    prefixes = {re.match(r"(enc|decs\.\d|quantize|down_samplers\.\d)\.", k).group(0) for k in full_size_keys}
    assert prefixes == {"enc.", "decs.0.", "decs.1.", "decs.2.", "quantize.", "down_samplers.0.", "down_samplers.1."}
    assert {k for k in full_size_keys if k.startswith("quantize.")} == {
        "quantize.proj.weight", "quantize.proj.bias", "quantize.embed.weight", "quantize.cluster_size",
        "quantize.embed_avg"}
    assert {k for k in full_size_keys if k.startswith("down_samplers.")} == {
        f"down_samplers.{i}.conv_down_sampler.conv.{p}" for i in (0, 1) for p in ("weight", "bias")}


def test_full_size_shapes_match_spec(full_size_keys):
    s = full_size_keys
    assert s["quantize.embed.weight"] == (20000, 256) and s["quantize.proj.weight"] == (256, 256, 1, 1)
    assert s["quantize.cluster_size"] == (20000,) and s["quantize.embed_avg"] == (20000, 256)
    # encoder: 3->128; levels 128->128, 128->256, 256->512 with 2 ResBlocks each; mid 512; out 512->256
    assert s["enc.conv_in.weight"] == (128, 3, 3, 3)
    assert s["enc.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert s["enc.down.2.block.1.conv2.weight"] == (512, 512, 3, 3)
    assert "enc.down.2.downsample.conv.weight" not in s and s["enc.down.1.downsample.conv.weight"] == (256, 256, 3, 3)
    assert s["enc.mid.attn_1.q.weight"] == (512, 512, 1, 1) and s["enc.norm_out.weight"] == (512,)
    assert s["enc.conv_out.weight"] == (256, 512, 3, 3)
    assert not any(".attn." in k for k in s if k.startswith("enc.down"))
    # decoders: channel_mult (1,1,1,2,4), (1,1,2,4), (1,2,4); attention only at decs[0]'s lowest level
    for k, levels in enumerate((5, 4, 3)):
        assert s[f"decs.{k}.conv_in.weight"] == (512, 256, 3, 3) and s[f"decs.{k}.conv_out.weight"] == (3, 128, 3, 3)
        assert {int(m.group(1)) for m in (re.match(rf"decs\.{k}\.up\.(\d)\.", x) for x in s) if m} == set(range(levels))
        assert f"decs.{k}.up.0.upsample.conv.weight" not in s
    assert [k for k in s if ".up." in k and ".attn." in k] == [k for k in s if k.startswith("decs.0.up.4.attn.0.")]
    assert s["decs.1.up.2.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)


@pytest.mark.parametrize("rate,grid", [(4, 40), (8, 20), (16, 10)])
def test_encode_decode_shapes_at_every_compress_rate(rate, grid):
    torch.manual_seed(0)
    tok = IceImageTokenizer(None, compress_rate=rate, **TINY)
    frames = torch.rand(1, 3, 160, 160)
    codes = tok.encode(frames)
    assert codes.shape == (1, grid, grid) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < tok.codebook_size == 64
    out = tok.decode(codes)
    assert out.shape == (1, 3, 160, 160) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert tok.grid_size(160, 160) == (grid, grid) and tok.downsample == rate


def test_batches_of_non_square_frames():
    torch.manual_seed(0)
    tok = IceImageTokenizer(None, compress_rate=16, **TINY)
    codes = tok.encode(torch.rand(2, 3, 32, 48))
    assert codes.shape == (2, 2, 3)
    assert tok.decode(codes).shape == (2, 3, 32, 48)


def test_loads_ice_image_pt_and_reports_missing_and_unexpected_keys(tmp_path):
    torch.manual_seed(0)
    source = IceImageTokenizer(None, **TINY)
    state = dict(source.state_dict())
    state.pop("decs.2.conv_out.bias")
    state["loss.discriminator.weight"] = torch.zeros(1)
    torch.save({"module": state}, tmp_path / "ice_image.pt")
    with pytest.warns(UserWarning, match="strict=False"):
        tok = IceImageTokenizer(str(tmp_path / "ice_image.pt"), **TINY)
    assert tok.load_warnings == ["missing: decs.2.conv_out.bias", "unexpected: loss.discriminator.weight"]
    assert torch.equal(tok.quantize.embed.weight, source.quantize.embed.weight)
    frames = torch.rand(1, 3, 64, 64)
    assert torch.equal(tok.encode(frames), source.encode(frames))


def test_file_problems_are_clear(tmp_path):
    with pytest.raises(DataError, match=r"ice_image\.pt not found at .*pip install icetk.*~/\.icetk_models"):
        IceImageTokenizer(str(tmp_path / "ice_image.pt"))
    torch.save({"module": IceImageTokenizer(None, **TINY).state_dict()}, tmp_path / "small.pt")
    with pytest.raises(DataError, match=r"quantize\.embed\.weight: file \[64, 32\] vs model \[128, 32\]"):
        IceImageTokenizer(str(tmp_path / "small.pt"), channels=32, z_channels=32, codebook_size=128)

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"module": {}, "x": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="refusing to load"):
        IceImageTokenizer(str(tmp_path / "evil.pt"), **TINY)
    assert not (tmp_path / "pwned").exists()


def test_bad_inputs_and_settings():
    tok = IceImageTokenizer(None, compress_rate=8, **TINY)
    with pytest.raises(ShapeError, match="multiple of icetk's compress_rate 8"):
        tok.encode(torch.rand(1, 3, 100, 160))
    with pytest.raises(ShapeError, match=r"\[N, 3, H, W\]"):
        tok.encode(torch.rand(3, 160, 160))
    with pytest.raises(ShapeError, match=r"\[0, 64\)"):
        tok.decode(torch.full((1, 2, 2), 64))
    with pytest.raises(ConfigError, match="4, 8 or 16"):
        IceImageTokenizer(None, compress_rate=2, **TINY)
    with pytest.raises(ConfigError, match="float16 only on a GPU"):
        IceImageTokenizer(None, dtype="float16", **TINY)


def test_registry_builds_icetk_and_exposes_the_codebook():
    tok = get_registries().build("image_tokenizer", {"name": "icetk", "path": None, **TINY})
    assert isinstance(tok, IceImageTokenizer) and tok.codebook.shape == (64, 32)


# ------------------------------------------------------------------------------ text tokenizer
@pytest.fixture(scope="module")
def ice_like_text_model(tmp_path_factory):
    """A tiny SentencePiece model with the pieces ice_text.model has: <unk>, <n>, <pad>."""
    path = tmp_path_factory.mktemp("icetk") / "ice_text.model"
    lines = ["一个男人在海边散步", "a man walks on the beach", "4.0秒", "a red circle moves left"] * 5
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(path.with_suffix("")),
                                   vocab_size=60, model_type="bpe", user_defined_symbols=["<n>", "<pad>"],
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2)
    return path


def test_icetk_text_ids_and_special_tokens(ice_like_text_model):
    tok = get_registries().build("text_tokenizer", {"name": "icetk_text", "model_path": str(ice_like_text_model)})
    sp = spm.SentencePieceProcessor(model_file=str(ice_like_text_model))
    pieces = sp.get_piece_size()
    # As icetk's add_special_tokens: appended after the pieces (ice_text.model: 130000 -> BOI 150000).
    assert tok.boi_id == 20000 + pieces
    assert [tok.decode([tok.boi_id + i]) for i in range(3)] == list(ICETK_SPECIAL_TOKENS)
    assert tok.vocab_size == 20000 + pieces + 3
    ids = tok.encode("a man walks")
    assert ids and min(ids) >= 20000 and tok.decode(ids) == "a man walks"
    assert (tok.sep_id, tok.pad_id) == (20000 + sp.piece_to_id("<n>"), 20000 + sp.piece_to_id("<pad>"))
    prompt, valid = tok.encode_prompt("a man walks", text_len=12, prefix="4.0秒")
    assert int(prompt[~valid][0]) == tok.pad_id and tok.sep_id in prompt.tolist()


def test_icetk_text_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"ice_text\.model not found .*icetk.*never downloads"):
        get_registries().build("text_tokenizer", {"name": "icetk_text", "model_path": str(tmp_path / "x.model")})
