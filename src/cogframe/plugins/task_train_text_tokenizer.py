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

from omegaconf import DictConfig
from tqdm import tqdm

from cogframe.core.io.atomic import atomic_write_json, atomic_write_text
from cogframe.core.io.datasets import iter_clips
from cogframe.core.io.frame_rate import DEFAULT_PREFIX_FORMAT, duration_prefix, normalize_rates
from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.plugins._task_helpers import build_split, output_dir, section, split_names, validate_splits
from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
from cogframe.registry import Registries, component

__all__ = ["TrainTextTokenizerTask"]

_PAPER_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@component("task", "train_text_tokenizer",
           description="Write a dataset's captions + frame-rate prefixes and train a SentencePiece model.")
class TrainTextTokenizerTask:
    """Trains the text tokenizer used by ``prepare`` and the model recipes."""

    slots = {"dataset": "dataset"}

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the split keywords and the corpus/tokenizer settings."""
        validate_splits(cfg, registries)
        self._settings(cfg)

    @staticmethod
    def _settings(cfg: DictConfig) -> tuple[tuple[float, ...], int, str, dict]:
        corpus, tokenizer = section(cfg, "corpus"), section(cfg, "tokenizer")
        unknown = (set(corpus) - {"prefix_rates", "frames", "prefix_format"},
                   set(tokenizer) - {"vocab_size", "model_type", "character_coverage", "seed"})
        if unknown[0] or unknown[1]:
            raise ConfigError(f"unknown keys corpus.{sorted(unknown[0])} / tokenizer.{sorted(unknown[1])}; corpus "
                              "takes prefix_rates, frames, prefix_format and tokenizer takes vocab_size, "
                              "model_type, character_coverage, seed.")
        rates = normalize_rates(corpus.get("prefix_rates", _PAPER_RATES), "corpus.prefix_rates")
        frames = int(corpus.get("frames", 5))
        fmt = str(corpus.get("prefix_format", DEFAULT_PREFIX_FORMAT))
        tokenizer.setdefault("vocab_size", 128)
        return rates, frames, fmt, tokenizer

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
