"""Task ``train_text_tokenizer``: write a caption corpus from a dataset and train SentencePiece on it.

The corpus has one line per clip caption plus, per clip, one line per frame-rate prefix in
``corpus.prefix_rates`` (e.g. ``"4.0s"``), so the prefixes are frequent enough to become single
pieces. Outputs in ``output_dir``: ``corpus.txt``, ``tokenizer.model``, ``tokenizer.vocab`` and
``summary.json``.

Recipe keys::

    output_dir: runs/tiny/text_tokenizer
    dataset: {name: moving_shapes, num_clips: 512}
    corpus: {prefix_rates: [0.25, 0.5, 1, 2, 4, 8], frames: 5, prefix_format: "{:.1f}s"}
    tokenizer: {vocab_size: 128, model_type: bpe, seed: 0}
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

from omegaconf import DictConfig
from tqdm import tqdm

from cogframe.core.io.atomic import atomic_write_json, atomic_write_text
from cogframe.core.io.datasets import iter_clips
from cogframe.core.io.frame_rate import DEFAULT_PREFIX_FORMAT, DEFAULT_RATES, duration_prefix, normalize_rates
from cogframe.errors import ConfigError, Problem
from cogframe.hookspecs import hookimpl
from cogframe.plugins._task_helpers import (
    build_split,
    check_recipe,
    output_dir,
    split_names,
    split_problems,
    task_settings,
)
from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
from cogframe.registry import Registries, component
from cogframe.plugins._run_folder import locks_run_folder

__all__ = ["TrainTextTokenizerTask"]



@dataclass(frozen=True)
class CorpusSettings:
    """The ``corpus:`` section: which frame-rate prefixes join the captions.

    Attributes:
        prefix_rates: Frame rates whose duration prefix gets one corpus line per clip.
        frames: Frames a prefix's duration spans (5 key frames: 4 gaps).
        prefix_format: Format of a duration in seconds, e.g. ``"{:.1f}s"``.
    """

    prefix_rates: list[float] = field(default_factory=lambda: list(DEFAULT_RATES))
    frames: int = 5
    prefix_format: str = DEFAULT_PREFIX_FORMAT

    def problems(self) -> list[Problem]:
        """Positive rates, at least 2 frames, a format that formats a number."""
        found = []
        if not self.prefix_rates or any(not 0 < r < float("inf") for r in self.prefix_rates):
            found.append(Problem("prefix_rates", "must be a non-empty list of positive frame rates, got "
                                 f"{list(self.prefix_rates)}", "e.g. [0.25, 0.5, 1, 2, 4, 8]"))
        if self.frames < 2:
            found.append(Problem("frames", f"must be >= 2, got {self.frames}", "e.g. 5 (the key frames)"))
        try:
            self.prefix_format.format(4.0)
        except (IndexError, KeyError, ValueError) as exc:
            found.append(Problem("prefix_format", f"cannot format a duration ({exc})", 'e.g. "{:.1f}s"'))
        return found


@dataclass(frozen=True)
class TokenizerSettings:
    """The ``tokenizer:`` section: SentencePiece training options.

    Attributes:
        vocab_size: Target number of pieces (>= 8).
        model_type: ``bpe``, ``unigram``, ``char`` or ``word``.
        character_coverage: Share of characters covered by pieces, in (0, 1].
        seed: SentencePiece's seed.
    """

    vocab_size: int = 128
    model_type: str = "bpe"
    character_coverage: float = 1.0
    seed: int = 0

    def problems(self) -> list[Problem]:
        """A usable vocabulary size, model type and coverage."""
        found = []
        if self.vocab_size < 8:
            found.append(Problem("vocab_size", f"must be >= 8, got {self.vocab_size}", "e.g. 128"))
        if self.model_type not in ("bpe", "unigram", "char", "word"):
            found.append(Problem("model_type", f"must be bpe, unigram, char or word, got {self.model_type!r}",
                                 "bpe suits tiny corpora"))
        if not 0 < self.character_coverage <= 1:
            found.append(Problem("character_coverage", f"must be in (0, 1], got {self.character_coverage}",
                                 "1.0 keeps every character"))
        if not 0 <= self.seed < 2**31:
            found.append(Problem("seed", f"must be in 0 .. 2**31-1, got {self.seed}", "e.g. 0"))
        return found


@dataclass(frozen=True)
class TextTokenizerRunSettings:
    """The top-level scalar keys: ``output_dir`` (corpus.txt, tokenizer.model, summary.json)."""

    output_dir: str


@component("task", "train_text_tokenizer",
           description="Write a dataset's captions + frame-rate prefixes and train a SentencePiece model.")
class TrainTextTokenizerTask:
    """Trains the text tokenizer used by ``prepare`` and the model recipes."""

    slots = {"dataset": "dataset"}

    list_slots = ()
    sections = {"": TextTokenizerRunSettings, "corpus": CorpusSettings, "tokenizer": TokenizerSettings}
    recipe_keys = ("splits",)

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the whole recipe for this task; raises one ConfigError listing every problem."""
        check_recipe(self, cfg, registries)

    def problems(self, cfg: DictConfig, registries: Registries) -> list:
        """The split keywords (sections and slots: validation)."""
        return split_problems(cfg, registries)

    def _settings(self, cfg: DictConfig) -> tuple[tuple[float, ...], int, str, dict]:
        sections = task_settings(self, cfg, strict=True)  # checked once, by validation
        corpus = sections["corpus"]
        rates = normalize_rates(corpus.prefix_rates, "corpus.prefix_rates")
        return rates, corpus.frames, corpus.prefix_format, asdict(sections["tokenizer"])

    @locks_run_folder("output_dir")
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Writes the corpus and trains ``<output_dir>/tokenizer.model``."""
        rates, frames, fmt, tok_cfg = self._settings(cfg)
        out = output_dir(cfg)
        prefixes = [duration_prefix(rate, frames, fmt) for rate in rates]
        lines: list[str] = []
        for split in split_names(cfg):
            dataset = build_split(cfg, registries, split)
            for _, clip in tqdm(iter_clips(dataset), total=len(dataset), desc=f"corpus ({split})",
                                unit="clip", file=sys.stderr):
                lines.append(clip.caption)
                lines.extend(prefixes)
        atomic_write_text(out / "corpus.txt", "\n".join(lines) + "\n")
        model_file = SentencePieceTokenizer.train(lines, out / "tokenizer", **tok_cfg)
        tokenizer = SentencePieceTokenizer(str(model_file))
        example = f"{prefixes[0]} <n> {lines[0]}"
        ids = tokenizer.encode(prefixes[0]) + [tokenizer.sep_id] + tokenizer.encode(lines[0])
        summary = {
            "model": str(model_file),
            "piece_count": tokenizer.piece_count,
            "corpus_lines": len(lines),
            "special_piece_ids": {"boi": tokenizer.boi_id, "sep": tokenizer.sep_id, "pad": tokenizer.pad_id},
            "prefixes": {p: tokenizer.encode(p) for p in prefixes},
            "example": {"text": example, "ids": ids},
        }
        atomic_write_json(out / "summary.json", summary)
        print(f"trained {model_file} ({tokenizer.piece_count} pieces from {len(lines)} corpus lines); "
              f"example {example!r} -> {ids}")


@hookimpl
def register_components():
    return [TrainTextTokenizerTask]
