"""Task ``prepare``: tokenise a dataset into resumable token shards (format: :mod:`cogframe.core.io.token_shards`).

For every clip: the frame-rate sampler picks a rate and 5 frames, the text tokenizer encodes
``prefix <n> caption`` into ``text_len`` left-padded slots, and the image tokenizer turns each
frame into a token grid. Samples are grouped into shards of ``shard_size`` dataset entries.

Resuming: shard ``k`` always covers entries ``[k * shard_size, (k + 1) * shard_size)`` and every
random choice is seeded by ``(seed, split, entry)``, so a finished shard (``.done`` marker with the
same settings fingerprint) is skipped on re-run and the result is identical to an uninterrupted
run. A shard whose marker has another fingerprint (the recipe changed) is an error unless
``overwrite: true``.

Recipe keys::

    output_dir: runs/tiny/shards
    seed: 0
    text_len: 16
    shard_size: 256
    encode_batch: 256          # frames per image-tokenizer call
    overwrite: false
    dataset: {name: moving_shapes}
    splits: {train: {split: train}, val: {split: val, num_clips: 64}}
    text_tokenizer: {name: sentencepiece, model_path: ..., id_offset: 256}
    image_tokenizer: {name: vqvae, path: ...}
    frame_rate_sampler: {name: lowest_fps}
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogframe.core.io.atomic import atomic_write_json, is_temp_file
from cogframe.core.io.datasets import SkipLog, SkippedEntry
from cogframe.core.io.token_shards import MANIFEST_FILE, SHARD_FORMAT, SHARD_VERSION, read_marker, shard_name, write_shard
from cogframe.core.training.settings import seed_problem
from cogframe.errors import ConfigError, DataError, Problem
from cogframe.hookspecs import hookimpl
from cogframe.plugins._task_helpers import (
    build_split,
    check_recipe,
    output_dir,
    split_names,
    split_problems,
    task_settings,
)
from cogframe.registry import Registries, component
from cogframe.plugins._run_folder import locks_run_folder

__all__ = ["PrepareTask"]



@dataclass(frozen=True)
class PrepareSettings:
    """The top-level scalar keys of a prepare recipe.

    Attributes:
        output_dir: The shard folder.
        seed: Seed of every random choice (per split and entry), in [0, 2**63).
        text_len: Text slots per sample (the model layout's ``text_len``).
        shard_size: Dataset entries per shard.
        encode_batch: Frames per image-tokenizer call.
        overwrite: Replace shards made with other settings instead of refusing.
        threads: torch CPU threads (0: torch's default).
    """

    output_dir: str
    seed: int = 0
    text_len: int = 16
    shard_size: int = 256
    encode_batch: int = 256
    overwrite: bool = False
    threads: int = 0

    def problems(self) -> list[Problem]:
        """Positive sizes, a non-negative thread count, a 64-bit seed."""
        found = [Problem(key, f"must be a positive integer, got {getattr(self, key)}", f"e.g. {key}=16")
                 for key in ("text_len", "shard_size", "encode_batch") if getattr(self, key) < 1]
        if self.threads < 0:
            found.append(Problem("threads", f"must be >= 0, got {self.threads}", "0 keeps torch's default"))
        if (problem := seed_problem(self.seed, "seed")) is not None:
            found.append(problem)
        return found


def _file_stamp(value: Any) -> Any:
    """Size + mtime of files (or folder contents) named by a config value, so retraining a
    tokenizer in place changes the fingerprint; other values are returned unchanged."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value)
    try:
        if path.is_file():
            st = path.stat()
            return [value, st.st_size, st.st_mtime_ns]
        if path.is_dir():
            return [value] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(path.iterdir())
                              if p.is_file() and not p.name.startswith(".")]
    except OSError:
        pass
    return value


def _fingerprint(parts: dict[str, Any]) -> str:
    def stamp(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: stamp(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [stamp(v) for v in obj]
        return _file_stamp(obj)

    return hashlib.sha256(json.dumps(stamp(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _node(cfg: DictConfig, key: str) -> dict:
    return OmegaConf.to_container(cfg[key], resolve=True)


@component("task", "prepare", description="Tokenise a dataset into train/val token shards (resumable).")
class PrepareTask:
    """Turns a clip dataset into token shards for training."""

    slots = {"dataset": "dataset", "text_tokenizer": "text_tokenizer", "image_tokenizer": "image_tokenizer",
             "frame_rate_sampler": "frame_rate_sampler"}

    list_slots = ()
    sections = {"": PrepareSettings}
    recipe_keys = ("splits",)

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the whole recipe for this task; raises one ConfigError listing every problem."""
        check_recipe(self, cfg, registries)

    def problems(self, cfg: DictConfig, registries: Registries) -> list[Problem]:
        """The split keywords and the components prepare cannot run without."""
        found = split_problems(cfg, registries)
        for key in ("text_tokenizer", "image_tokenizer", "frame_rate_sampler"):
            if OmegaConf.select(cfg, key, default=None) is None:
                found.append(Problem(key, f"is missing: prepare needs a {key} node",
                                     f"add `{key}: {{name: ...}}` (`cogframe plugins --kind {key}` lists them)"))
        return found

    @locks_run_folder("output_dir")
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Writes the shards of every split, then ``manifest.json``; prints a skipped-entry report."""
        s = asdict(task_settings(self, cfg, strict=True)[""])  # checked once, by validation
        out = output_dir(cfg)
        seed = s["seed"]
        if s["threads"]:
            torch.set_num_threads(int(s["threads"]))
        text_tok = registries.build("text_tokenizer", cfg.text_tokenizer)
        image_tok = registries.build("image_tokenizer", cfg.image_tokenizer)
        sampler = registries.build("frame_rate_sampler", cfg.frame_rate_sampler)
        if hasattr(image_tok, "eval"):
            image_tok.eval()
        if text_tok.id_offset < image_tok.codebook_size:
            raise ConfigError(
                f"text ids would overlap image ids: text_tokenizer.id_offset is {text_tok.id_offset} but the image "
                f"tokenizer has {image_tok.codebook_size} codes; set text_tokenizer.id_offset: "
                f"{image_tok.codebook_size}.")
        manifest: dict[str, Any] = {
            "format": SHARD_FORMAT, "version": SHARD_VERSION, "text_len": s["text_len"],
            "image_vocab_size": image_tok.codebook_size, "text_vocab_size": text_tok.vocab_size,
            "text_id_offset": text_tok.id_offset,
            "special_ids": {"boi": text_tok.boi_id, "sep": text_tok.sep_id, "pad": text_tok.pad_id},
            "sources": {k: _node(cfg, k) for k in ("text_tokenizer", "image_tokenizer", "frame_rate_sampler")},
            "splits": {},
        }
        reports = []
        for split in split_names(cfg):
            dataset = build_split(cfg, registries, split)
            fingerprint = _fingerprint({"dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
                                        "split": _node(cfg, "splits").get(split) if cfg.get("splits") is not None else None,
                                        "seed": seed, "text_len": s["text_len"], "shard_size": s["shard_size"],
                                        **manifest["sources"]})
            split_info, log, shape = self._prepare_split(split, dataset, out, fingerprint, seed, s,
                                                         text_tok, image_tok, sampler)
            manifest["splits"][split] = split_info
            if shape is not None:
                manifest.setdefault("num_frames", shape[0])
                manifest.setdefault("grid", list(shape[1:]))
            total = getattr(dataset, "total_entries", len(dataset))
            reports.append(log.summary(f"prepare {split} ({cfg.dataset.name})", total))
        if "num_frames" not in manifest:
            # The report goes into the message: it is the only place the user learns why.
            raise DataError("prepare produced no samples at all: every entry was skipped. Fix or replace the "
                            "entries listed below (or point the dataset at another folder):\n"
                            + "\n".join(reports))
        atomic_write_json(out / MANIFEST_FILE, manifest)
        for report in reports:
            print(report)
        counts = ", ".join(f"{k}: {v['num_samples']} samples in {len(v['shards'])} shards"
                           for k, v in manifest["splits"].items())
        print(f"token shards in {out} ({counts}); manifest {out / MANIFEST_FILE}")

    def _prepare_split(self, split, dataset, out: Path, fingerprint: str, seed: int, s: dict,
                       text_tok, image_tok, sampler) -> tuple[dict, SkipLog, tuple | None]:
        size = s["shard_size"]
        count = len(dataset)
        # Skips found while building the dataset (missing files, malformed lines); skips found while
        # decoding are attributed to the shard they fall in and stored in its marker.
        log = SkipLog(getattr(dataset, "skip_log", None) or ())
        shards, shape, reused = [], None, 0
        # Temp files of a run that was killed mid-write are never complete; remove them.
        for leftover in out.glob(f".{split}-*"):
            if is_temp_file(leftover):
                leftover.unlink(missing_ok=True)
        # A context manager closes the bar on errors too, so an error message starts on its own line.
        with tqdm(total=count, desc=f"prepare {split}", unit="clip", file=sys.stderr) as bar:
            for number in range(math.ceil(count / size)):
                path = out / shard_name(split, number)
                entries = range(number * size, min(count, (number + 1) * size))
                marker = read_marker(path)
                if marker is not None and marker.get("fingerprint") == fingerprint:
                    reused += 1
                    bar.update(len(entries))
                    skipped = [SkippedEntry.from_dict(d) for d in marker.get("skipped", [])]
                else:
                    if marker is not None and not s["overwrite"]:
                        raise DataError(
                            f"{path} was made with different settings (fingerprint {marker.get('fingerprint')} != "
                            f"{fingerprint}); use a new output_dir, delete the old shards, or set overwrite: true.")
                    marker, skipped = self._write_shard(path, split, dataset, entries, fingerprint, seed, s,
                                                        text_tok, image_tok, sampler, bar)
                if marker["num_samples"]:
                    sample_shape = tuple(marker["sample_shape"])
                    if shape is not None and sample_shape != shape:
                        raise DataError(f"{path} holds samples of shape {list(sample_shape)} but earlier shards "
                                        f"have {list(shape)}; give the dataset a fixed size and re-run with "
                                        "overwrite: true.")
                    shape = sample_shape
                log.extend(skipped)
                shards.append({"file": path.name, "num_samples": int(marker["num_samples"])})
        if reused:
            print(f"prepare {split}: reused {reused} finished shard(s) from an earlier run", file=sys.stderr)
        info = {"num_samples": sum(x["num_samples"] for x in shards), "shards": shards, "skipped": len(log),
                "fingerprint": fingerprint}
        return info, log, shape

    def _write_shard(self, path: Path, split: str, dataset, entries: range, fingerprint: str, seed: int, s: dict,
                     text_tok, image_tok, sampler, bar) -> tuple[dict, list[SkippedEntry]]:
        strict = bool(getattr(dataset, "strict", False))
        dataset_log = getattr(dataset, "skip_log", None)
        before = len(dataset_log) if dataset_log is not None else 0
        own_skips: list[SkippedEntry] = []
        texts, valids, frame_sets, fps, kept, captions, prefixes = [], [], [], [], [], [], []
        # A dataset that tells a clip's length before decoding it (video_folder: probe + read_frames)
        # decodes only the sampled frames; the same rng draws pick the same frames as a whole clip would.
        partial = callable(getattr(dataset, "probe", None)) and callable(getattr(dataset, "read_frames", None))
        for index in entries:
            clip = dataset.probe(index) if partial else dataset[index]
            bar.update(1)
            if clip is None:
                continue  # the dataset recorded why
            rng = random.Random(f"{seed}:{split}:{index}")
            try:
                choice = sampler(clip.num_frames, clip.fps, rng)
                ids, valid = text_tok.encode_prompt(clip.caption, s["text_len"], prefix=choice.prefix)
            except DataError as exc:
                if strict:
                    raise
                own_skips.append(SkippedEntry(clip.metadata.get("path", clip.source), "unusable for prepare",
                                              str(exc)[:200]))
                continue
            frames = dataset.read_frames(index, choice.frame_indices) if partial else clip.frames[choice.frame_indices]
            if frames is None:
                continue  # the dataset recorded why
            texts.append(ids)
            valids.append(valid)
            frame_sets.append(frames)
            fps.append(choice.fps)
            kept.append(index)
            captions.append(clip.caption)
            prefixes.append(choice.prefix)
        skipped = (list(dataset_log.entries[before:]) if dataset_log is not None else []) + own_skips
        tokens = self._encode_frames(frame_sets, image_tok, s["encode_batch"])
        n = len(kept)
        tensors = {
            "text": torch.stack(texts).to(torch.int32) if n else torch.zeros(0, s["text_len"], dtype=torch.int32),
            "text_valid": torch.stack(valids) if n else torch.zeros(0, s["text_len"], dtype=torch.bool),
            "frames": tokens.to(torch.int32),
            "fps": torch.tensor(fps, dtype=torch.float32),
            "index": torch.tensor(kept, dtype=torch.int64),
        }
        marker = {"fingerprint": fingerprint, "num_samples": n, "sample_shape": list(tokens.shape[1:]),
                  "entries": [entries.start, entries.stop], "skipped": [e.to_dict() for e in skipped]}
        write_shard(path, tensors, {"captions": json.dumps(captions), "prefixes": json.dumps(prefixes)}, marker)
        return marker, skipped

    @staticmethod
    def _encode_frames(frame_sets: list[np.ndarray], image_tok, batch: int) -> torch.Tensor:
        """``n`` clips of ``[T, H, W, 3]`` uint8 -> ``[n, T, h, w]`` long tokens."""
        if not frame_sets:
            return torch.zeros(0, 0, 0, 0, dtype=torch.long)
        shapes = {f.shape for f in frame_sets}
        if len(shapes) > 1:
            raise DataError(f"sampled clips have different shapes {sorted(shapes)}; give the dataset a fixed 'size' "
                            "and a frame-rate sampler with a fixed frame count.")
        num_frames = frame_sets[0].shape[0]
        flat = torch.from_numpy(np.stack(frame_sets)).flatten(0, 1).permute(0, 3, 1, 2)
        with torch.no_grad():
            codes = torch.cat([image_tok.encode(flat[i:i + batch].float() / 255.0)
                               for i in range(0, flat.shape[0], batch)]).cpu()
        return codes.view(len(frame_sets), num_frames, *codes.shape[1:])


@hookimpl
def register_components():
    return [PrepareTask]
