"""SentencePiece text tokenizer: training, global id space, round trips, prompt layout, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.errors import ConfigError, DataError, ShapeError
from cogframe.plugins import get_registries
from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES
from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer

CAPTIONS = [f"a {c} {s} moving {d}" for s, c, d in itertools.product(SHAPES, COLOURS, DIRECTIONS)]
PREFIXES = ["16.0s", "8.0s", "4.0s", "2.0s", "1.0s", "0.5s"]
CORPUS = CAPTIONS * 3 + PREFIXES * 40
ALPHABET = sorted(set("".join(CORPUS)))  # every character the model was trained on


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return SentencePieceTokenizer.train(CORPUS, tmp_path_factory.mktemp("tok") / "tok", vocab_size=128)


@pytest.fixture(scope="module")
def tok(model_file):
    return SentencePieceTokenizer(str(model_file), id_offset=256)


def test_training_is_deterministic(model_file, tmp_path):
    again = SentencePieceTokenizer.train(CORPUS, tmp_path / "tok", vocab_size=128)
    assert again.read_bytes() == model_file.read_bytes()
    assert (tmp_path / "tok.vocab").is_file()


def test_global_id_space(tok, model_file):
    plain = SentencePieceTokenizer(str(model_file))
    assert tok.piece_count == plain.piece_count <= 128
    assert tok.id_offset == 256 and tok.vocab_size == 256 + tok.piece_count
    for name in ("boi_id", "sep_id", "pad_id"):
        assert getattr(tok, name) == getattr(plain, name) + 256
    assert len({tok.boi_id, tok.sep_id, tok.pad_id}) == 3
    ids = tok.encode("a red circle moving left")
    assert all(256 <= i < tok.vocab_size for i in ids)
    assert [i - 256 for i in ids] == plain.encode("a red circle moving left")


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=ALPHABET, min_size=0, max_size=60))
def test_round_trip_over_the_training_alphabet(tok, text):
    assert tok.decode(tok.encode(text)) == tok.normalize(text)


def test_round_trip_examples(tok):
    assert tok.decode(tok.encode("  a  red   circle ")) == "a red circle"
    for caption in CAPTIONS[:10]:
        assert tok.decode(tok.encode(caption)) == caption


def test_encode_prompt_layout(tok):
    ids, valid = tok.encode_prompt("a red circle moving left", 16, prefix="4.0s")
    assert ids.shape == valid.shape == (16,) and ids.dtype == torch.long and valid.dtype == torch.bool
    n = int(valid.sum())
    prefix, caption = tok.encode("4.0s"), tok.encode("a red circle moving left")
    assert n == len(prefix) + 1 + len(caption)
    assert not valid[:16 - n].any() and valid[16 - n:].all()  # left padding
    assert (ids[:16 - n] == tok.pad_id).all()
    assert ids[16 - n:].tolist() == prefix + [tok.sep_id] + caption
    no_prefix, valid2 = tok.encode_prompt("a red circle moving left", 16)
    assert no_prefix[valid2].tolist() == caption
    assert tok.decode(ids[valid]) == "4.0s<n> a red circle moving left"


def test_too_long_prompt(tok, model_file):
    with pytest.raises(ShapeError, match=r"(?s)prompt too long: \d+ tokens.*text_len is 5.*truncate: true"):
        tok.encode_prompt("a red circle moving left", 5, prefix="4.0s")
    cutting = SentencePieceTokenizer(str(model_file), id_offset=256, truncate=True)
    ids, valid = cutting.encode_prompt("a red circle moving left", 5, prefix="4.0s")
    prefix = cutting.encode("4.0s")
    assert valid.all() and ids.tolist()[: len(prefix) + 1] == prefix + [cutting.sep_id]


def test_empty_prompt(tok):
    with pytest.raises(DataError, match="empty prompt"):
        tok.encode_prompt("   ", 16, prefix="4.0s")


def test_decode_rejects_image_ids(tok):
    with pytest.raises(ShapeError, match="not a text id"):
        tok.decode([3, 300])
    assert tok.decode([tok.pad_id, *tok.encode("a red")]) == "a red"


def test_missing_special_piece_and_extra_pieces(model_file):
    with pytest.raises(ConfigError, match="no '<start_of_image>' piece.*extra_pieces"):
        SentencePieceTokenizer(str(model_file), boi_piece="<start_of_image>")
    tok = SentencePieceTokenizer(str(model_file), id_offset=20000, boi_piece="<start_of_image>",
                                 extra_pieces=["<start_of_image>", "<start_of_english>"])
    sp_pieces = tok.piece_count - 2
    assert tok.boi_id == 20000 + sp_pieces and tok.vocab_size == 20000 + sp_pieces + 2  # icetk's layout
    assert tok.decode([*tok.encode("a red"), tok.boi_id]) == "a red<start_of_image>"


def test_errors_for_missing_model_and_empty_corpus(tmp_path):
    with pytest.raises(DataError, match="no SentencePiece model"):
        SentencePieceTokenizer(str(tmp_path / "nope.model"))
    (tmp_path / "bad.model").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        SentencePieceTokenizer(str(tmp_path / "bad.model"))
    with pytest.raises(DataError, match="empty corpus"):
        SentencePieceTokenizer.train(["", "  "], tmp_path / "x", vocab_size=32)


def test_registered(model_file):
    tok = get_registries().build("text_tokenizer", {"name": "sentencepiece", "model_path": str(model_file),
                                                    "id_offset": 256})
    assert tok.vocab_size > 256


def test_train_task(tmp_path, capsys):
    from omegaconf import OmegaConf

    regs = get_registries()
    cfg = OmegaConf.create({"task": "train_text_tokenizer", "output_dir": str(tmp_path),
                            "dataset": {"name": "moving_shapes", "num_clips": 64},
                            "tokenizer": {"vocab_size": 100}})
    task = regs.build("task", {"name": "train_text_tokenizer"})
    task.validate(cfg, regs)
    task.run(cfg, regs)
    tok = SentencePieceTokenizer(str(tmp_path / "tokenizer.model"), id_offset=256)
    assert tok.piece_count <= 100 and (tmp_path / "corpus.txt").is_file() and (tmp_path / "summary.json").is_file()
    assert len(tok.encode("4.0s")) <= 2  # frequent prefixes become (nearly) single pieces
    assert "trained" in capsys.readouterr().out


def test_unknown_words_are_refused_before_the_length_check(tok, model_file):
    with pytest.raises(DataError, match=r"prompt 'a x-ray Zebra moving left' has words .* does not cover: "
                                        r"'x-ray', 'Zebra'\. They would become <unk>") as info:
        tok.encode_prompt("a x-ray Zebra moving left", 5, prefix="4.0s")
    message = str(info.value)
    assert "too long" not in message and "words it knows include: a, blue, circle" in message
    assert "case-sensitive" not in message  # 'zebra' is unknown in any case
    with pytest.raises(DataError, match=r"does not cover: 'RED'.*lower-case spelling: 'a red circle'"):
        tok.encode_prompt("a RED circle", 16)
    with pytest.raises(DataError, match=r"frame-rate prefix '3.5s' has words .* '3.5s'"):
        tok.encode_prompt("a red circle", 16, prefix="3.5s")  # no '3' in the training corpus
    assert tok.unknown_words("a red circle moving left") == []
    lenient = SentencePieceTokenizer(str(model_file), id_offset=256, allow_unknown=True)
    ids, valid = lenient.encode_prompt("a RED circle", 16)
    assert int(valid.sum()) == len(lenient.encode("a RED circle"))


def test_too_long_names_the_words_spelled_out_piece_by_piece(tok):
    with pytest.raises(ShapeError, match=r"prompt too long.*spells out piece by piece.*'purple' \(\d+ tokens\)"):
        tok.encode_prompt("a purple circle moving left", 8, prefix="4.0s")
