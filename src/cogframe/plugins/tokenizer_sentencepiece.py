"""``sentencepiece``: the text tokenizer (kind ``text_tokenizer``), icetk-style id space.

icetk puts image tokens first and text after them: text id = sentencepiece id + 20000 (THUDM/icetk
ice_tokenizer.py). :class:`SentencePieceTokenizer` generalises that with ``id_offset``: every id it returns or
accepts is GLOBAL (piece id + ``id_offset``), so a model whose image vocabulary is the VQ codebook
can use ``id_offset = codebook_size`` and one shared embedding table of
``vocab_size = id_offset + piece_count`` rows.

Special pieces (added as user-defined symbols when training with :meth:`train`; their names are
configurable):

* ``<boi>`` — begin-of-image, the BOI token before the frame tokens;
* ``<n>`` — the separator after the frame-rate/duration prefix (``"4.0s" <n> caption``);
* ``<pad>`` — left padding of the text slots.

A model that lacks a special piece can get it appended after its own pieces with
``extra_pieces``, as icetk appends ``<start_of_image>`` at run time (icetk ``add_special_tokens``): with
``ice_text.model`` (130000 pieces), ``id_offset=20000``, ``boi_piece="<start_of_image>"`` and
``extra_pieces=["<start_of_image>", "<start_of_english>", "<start_of_chinese>"]`` BOI is 150000.

Unknown text: characters the model never saw in training become ``<unk>`` pieces, and a prompt
made of ``<unk>`` generates a video from no information at all. :meth:`encode_prompt` therefore
refuses captions and prefixes with words that encode to ``<unk>`` (naming them, noting case
mistakes, and listing words the tokenizer knows) unless ``allow_unknown`` is set. icetk's own
tokenizer maps such characters to ``<unk>`` silently; ``icetk_text`` inherits this refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import io
import os
from pathlib import Path
from typing import Iterable, Sequence


from cogframe.core.io.atomic import atomic_write_bytes
from cogframe.errors import ConfigError, DataError, ShapeError
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

if TYPE_CHECKING:  # torch only for annotations: validating a recipe must stay torch-free
    import torch

__all__ = ["BOI_PIECE", "PAD_PIECE", "SEP_PIECE", "SentencePieceTokenizer"]

BOI_PIECE = "<boi>"
SEP_PIECE = "<n>"
PAD_PIECE = "<pad>"
SPECIAL_PIECES = (BOI_PIECE, SEP_PIECE, PAD_PIECE)


@component("text_tokenizer", "sentencepiece",
           description="SentencePiece model; ids offset past the image codebook (icetk style).")
class SentencePieceTokenizer:
    """Text <-> ids with a SentencePiece ``.model``; all ids are global (piece id + ``id_offset``).

    Args:
        model_path: The ``.model`` file (trained by :meth:`train` or any SentencePiece model that has
            ``<boi>``, ``<n>`` and ``<pad>`` pieces).
        id_offset: Added to every piece id (icetk: 20000, the image vocabulary size).
        truncate: In :meth:`encode_prompt`, cut captions that do not fit instead of raising.
        boi_piece: Name of the begin-of-image piece.
        sep_piece: Name of the separator piece after the frame-rate prefix.
        pad_piece: Name of the padding piece.
        extra_pieces: Pieces appended after the model's own (global ids ``id_offset +
            len(model) + i``); used for special pieces the ``.model`` file lacks.
        allow_unknown: Let :meth:`encode_prompt` encode words the model does not cover as
            ``<unk>`` instead of raising (for large real-world vocabularies where a rare
            symbol is harmless).

    Raises:
        DataError: The model file is missing or unreadable.
        ConfigError: The model lacks one of the special pieces, or ``id_offset`` is negative.
    """

    def __init__(self, model_path: str, id_offset: int = 0, truncate: bool = False, boi_piece: str = BOI_PIECE,
                 sep_piece: str = SEP_PIECE, pad_piece: str = PAD_PIECE, extra_pieces: Sequence[str] = (),
                 allow_unknown: bool = False) -> None:
        import sentencepiece as spm

        path = Path(model_path)
        if not path.is_file():
            raise DataError(f"no SentencePiece model at {path}; train one with `cogframe run tiny/text_tokenizer` "
                            "or set text_tokenizer.model_path to an existing .model file.")
        if int(id_offset) < 0:
            raise ConfigError(f"id_offset must be >= 0, got {id_offset}.")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load(str(path))
        except (OSError, RuntimeError) as exc:
            raise DataError(f"cannot load SentencePiece model {path} ({exc}); the file is corrupt or not a "
                            "SentencePiece model, re-train it.") from exc
        self.model_path = path
        self._offset = int(id_offset)
        self.truncate = bool(truncate)
        self.allow_unknown = bool(allow_unknown)
        self._extra = [str(p) for p in extra_pieces]
        self._special = {role: self._special_id(piece, role)
                         for role, piece in (("boi", boi_piece), ("sep", sep_piece), ("pad", pad_piece))}

    def _special_id(self, piece: str, role: str) -> int:
        if piece in self._extra:
            return self._offset + self._sp.get_piece_size() + self._extra.index(piece)
        piece_id = self._sp.piece_to_id(piece)
        if piece_id == self._sp.unk_id() and piece != self._sp.id_to_piece(piece_id):
            raise ConfigError(
                f"SentencePiece model {self.model_path} has no {piece!r} piece (the {role} token); train the model "
                f"with SentencePieceTokenizer.train (which adds {', '.join(SPECIAL_PIECES)}), set {role}_piece to "
                f"a piece the model has, or append it with extra_pieces: [{piece!r}].")
        return piece_id + self._offset

    # ---- id space -------------------------------------------------------------------------------
    @property
    def piece_count(self) -> int:
        """Number of pieces: the SentencePiece model's plus ``extra_pieces``."""
        return self._sp.get_piece_size() + len(self._extra)

    @property
    def id_offset(self) -> int:
        """Global id of piece 0."""
        return self._offset

    @property
    def vocab_size(self) -> int:
        """Embedding rows needed for all text ids: ``id_offset + piece_count``."""
        return self._offset + self.piece_count

    @property
    def boi_id(self) -> int:
        """Global id of ``<boi>``."""
        return self._special["boi"]

    @property
    def sep_id(self) -> int:
        """Global id of ``<n>``, the separator after the frame-rate prefix."""
        return self._special["sep"]

    @property
    def pad_id(self) -> int:
        """Global id of ``<pad>``, used for left padding."""
        return self._special["pad"]

    # ---- text <-> ids ---------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        """The text :meth:`decode` returns for ``encode(text)``: SentencePiece's normalisation
        (NFKC, runs of spaces collapsed, ends stripped) when every character is in the vocabulary."""
        return self._sp.normalize(text).replace("\u2581", " ").strip()

    def encode(self, text: str) -> list[int]:
        """Global ids of ``text`` (no BOI, no padding)."""
        return [i + self._offset for i in self._sp.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of global ids; pad ids are dropped, ids outside the text range raise ShapeError.

        Extra pieces decode to their own name, e.g. ``<start_of_image>``.
        """
        parts, run = [], []
        model_pieces = self._sp.get_piece_size()
        for i in (int(x) for x in ids):
            if i == self.pad_id:
                continue
            if not self._offset <= i < self.vocab_size:
                raise ShapeError(f"id {i} is not a text id of this tokenizer (text ids are "
                                 f"[{self._offset}, {self.vocab_size})); strip image tokens before decoding.")
            local = i - self._offset
            if local < model_pieces:
                run.append(local)
                continue
            if run:
                parts.append(self._sp.decode(run))
                run = []
            parts.append(self._extra[local - model_pieces])
        if run:
            parts.append(self._sp.decode(run))
        return "".join(parts)

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` (split at white space) with characters the model maps to ``<unk>``,
        in order, without repeats (a text without spaces, e.g. Chinese, is one word)."""
        unk = self._sp.unk_id()
        if unk < 0:  # a model without an <unk> piece (byte fallback) covers everything
            return []
        found: list[str] = []
        for word in text.split():
            if word not in found and unk in self._sp.encode(word):
                found.append(word)
        return found

    def known_words(self, limit: int = 40) -> list[str]:
        """Up to ``limit`` whole words the model has as single pieces, sorted (for messages).

        Word-initial pieces that begin a longer such piece (``cir`` of ``circle``) are fragments
        BPE kept on the way, not words, and are left out.
        """
        pieces = sorted({piece[1:] for piece in (self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size()))
                         if piece.startswith("\u2581") and len(piece) > 1 and piece[1:].isalpha()})
        words = [w for i, w in enumerate(pieces) if not (i + 1 < len(pieces) and pieces[i + 1].startswith(w))]
        return words[:limit]

    def _unknown_error(self, text: str, words: list[str], what: str) -> DataError:
        shown = ", ".join(repr(w) for w in words)
        hints = []
        if all(not self.unknown_words(w.lower()) for w in words) and any(w != w.lower() for w in words):
            hints.append(f"the tokenizer is case-sensitive and knows the lower-case spelling: {text.lower()!r}")
        known = self.known_words()
        if known:
            more = " ..." if len(known) == 40 else ""
            hints.append(f"words it knows include: {', '.join(known)}{more}")
        hint = ("; " + "; ".join(hints)) if hints else ""
        return DataError(
            f"{what} {text!r} has words the text tokenizer ({self.model_path.name}) does not cover: {shown}. "
            f"They would become <unk> tokens, and the model would generate from no information{hint}. "
            "Rephrase the prompt with words from the training captions, train a text tokenizer on captions "
            "that contain these words (task train_text_tokenizer, e.g. `cogframe run tiny/text_tokenizer`), "
            "or set text_tokenizer.allow_unknown: true to encode them as <unk> anyway.")

    def _spelled_out(self, caption: str, minimum: int = 3) -> list[str]:
        """``'word' (n tokens)`` for words that take ``minimum`` or more pieces."""
        costly = []
        for word in caption.split():
            n = len(self._sp.encode(word))
            if n >= minimum:
                costly.append(f"{word!r} ({n} tokens)")
        return costly

    def encode_prompt(self, caption: str, text_len: int, prefix: str | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text slots of one sample: ``[pad ... pad, prefix, <n>, caption]`` (left-padded).

        The ids and every check come from :meth:`prompt_tokens`; this adds the tensors.

        Args:
            caption: The caption; must not be empty.
            text_len: Number of text slots.
            prefix: Optional frame-rate/duration prefix (e.g. ``"4.0s"``), followed by ``<n>``.

        Returns:
            ``(ids, valid)``: ``ids`` long ``[text_len]`` (pad = :attr:`pad_id` on the left) and
            ``valid`` bool ``[text_len]``, True on real tokens.

        Raises:
            DataError: Empty caption, or (without ``allow_unknown``) a caption or prefix with
                words the model does not cover (they are named).
            ShapeError: The prompt has more tokens than ``text_len`` and ``truncate`` is off.
        """
        tokens = self.prompt_tokens(caption, text_len, prefix=prefix)
        import torch  # here, not at the top: validating prompts (prompt_tokens) needs no tensors

        ids = torch.full((text_len,), self.pad_id, dtype=torch.long)
        valid = torch.zeros(text_len, dtype=torch.bool)
        if tokens:
            ids[text_len - len(tokens):] = torch.tensor(tokens, dtype=torch.long)
            valid[text_len - len(tokens):] = True
        return ids, valid

    def prompt_tokens(self, caption: str, text_len: int, prefix: str | None = None) -> list[int]:
        """The real (unpadded) ids of :meth:`encode_prompt`, with the same checks, without torch.

        ``cogframe validate`` checks every prompt of a sampling recipe through this method.

        Raises:
            DataError: As :meth:`encode_prompt`.
            ShapeError: As :meth:`encode_prompt`.
        """
        if not caption or not caption.strip():
            raise DataError("empty prompt: the caption has no text; give every clip a non-empty caption "
                            "(e.g. 'a red circle moving left').")
        if not self.allow_unknown:
            # Checked before the length: unknown characters are the real problem, and they also
            # make a prompt long (each one is its own piece).
            for text, what in ((caption, "prompt"), (prefix, "frame-rate prefix")):
                words = self.unknown_words(text) if text else []
                if words:
                    raise self._unknown_error(text, words, what)
        head = (self.encode(prefix) + [self.sep_id]) if prefix else []
        body = self.encode(caption)
        if len(head) + len(body) > text_len:
            if not self.truncate or len(head) >= text_len:
                costly = self._spelled_out(caption)
                spelled = (f" Words the tokenizer spells out piece by piece (not in its training captions): "
                           f"{', '.join(costly)}." if costly else "")
                raise ShapeError(
                    f"prompt too long: {len(head) + len(body)} tokens ({len(head)} for the prefix and <n>, "
                    f"{len(body)} for the caption) but text_len is {text_len}; shorten the prompt, raise "
                    "text_len (a model change), or set text_tokenizer.truncate: true to cut the caption's end."
                    f"{spelled} Prompt: {((prefix + ' <n> ') if prefix else '') + caption!r}")
            body = body[:text_len - len(head)]  # keep the prefix: it carries the frame rate
        return head + body

    # ---- training -------------------------------------------------------------------------------
    @classmethod
    def train(cls, lines: Iterable[str], model_prefix: str | os.PathLike, vocab_size: int,
              model_type: str = "bpe", character_coverage: float = 1.0, seed: int = 0) -> Path:
        """Trains a SentencePiece model with the ``<boi>``, ``<n>`` and ``<pad>`` pieces.

        Deterministic: one thread and a fixed seed, so the same lines give the same file.

        Args:
            lines: Training sentences (captions, frame-rate prefixes, ...).
            model_prefix: Output path without extension; writes ``<model_prefix>.model`` and
                ``<model_prefix>.vocab`` atomically.
            vocab_size: Target number of pieces; tiny corpora may end up with fewer (not an error).
            model_type: ``bpe`` (best for tiny corpora) or ``unigram``, ``char``, ``word``.
            character_coverage: Share of characters covered by pieces; 1.0 keeps every character.
            seed: Seed of SentencePiece's random generator.

        Returns:
            Path of the ``.model`` file.

        Raises:
            DataError: No non-empty lines.
            ConfigError: SentencePiece rejects the settings.
        """
        import sentencepiece as spm

        corpus = [line.strip() for line in lines if line and line.strip()]
        if not corpus:
            raise DataError("cannot train a text tokenizer on an empty corpus; give it at least one caption.")
        spm.set_random_generator_seed(int(seed))
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(corpus), model_writer=model, vocab_size=int(vocab_size),
                model_type=model_type, character_coverage=character_coverage,
                user_defined_symbols=list(SPECIAL_PIECES), hard_vocab_limit=False,
                num_threads=1, shuffle_input_sentence=False, minloglevel=2,
            )
        except RuntimeError as exc:
            raise ConfigError(f"SentencePiece training failed: {exc}. Check vocab_size ({vocab_size}) and "
                              f"model_type ({model_type!r}).") from exc
        prefix = Path(model_prefix)
        model_file = prefix.with_name(prefix.name + ".model")
        atomic_write_bytes(model_file, model.getvalue())
        processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
        vocab = "".join(f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n"
                        for i in range(processor.get_piece_size()))
        atomic_write_bytes(prefix.with_name(prefix.name + ".vocab"), vocab.encode("utf-8"))
        return model_file


@hookimpl
def register_components():
    return [SentencePieceTokenizer]
