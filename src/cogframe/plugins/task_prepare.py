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
    high_res: {scale: 3, dataset: {render_scale: 3}}   # optional: paired super-resolution shards

Paired super-resolution shards (``high_res``): every sample also holds the same frames rendered
``scale`` times larger, read from a second copy of the dataset built with ``high_res.dataset``
merged over ``dataset`` (``moving_shapes`` renders the same scene at any size with
``render_scale``; a video folder at ``size * scale`` resizes the same source frames). They are
tokenised with the same image tokenizer into the extra tensor ``frames_high`` ``[N, T, h*scale,
w*scale]``; the manifest gains ``high_res: {scale, grid}``. A high-res frame that is not the
low-res frame's clip (another caption) or not ``scale`` times its size is an error.
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
    recipe_keys = ("splits", "high_res")

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the whole recipe for this task; raises one ConfigError listing every problem."""
        check_recipe(self, cfg, registries)

    def problems(self, cfg: DictConfig, registries: Registries) -> list[Problem]:
        """The split keywords and the components prepare cannot run without."""
        found = split_problems(cfg, registries) + _high_res_problems(cfg, registries)
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
        high_res = _high_res_node(cfg)
        for split in split_names(cfg):
            dataset = build_split(cfg, registries, split)
            # The paired high-res copy of this split (None: plain shards, and the same fingerprint).
            high = None if high_res is None else (_build_high_split(cfg, registries, split, high_res),
                                                  int(high_res["scale"]))
            fingerprint = _fingerprint({"dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
                                        "split": _node(cfg, "splits").get(split) if cfg.get("splits") is not None else None,
                                        "seed": seed, "text_len": s["text_len"], "shard_size": s["shard_size"],
                                        **manifest["sources"], **({"high_res": high_res} if high_res else {})})
            split_info, log, shape = self._prepare_split(split, dataset, out, fingerprint, seed, s,
                                                         text_tok, image_tok, sampler, high=high)
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
        if high_res is not None:
            scale = int(high_res["scale"])
            manifest["high_res"] = {"scale": scale, "grid": [g * scale for g in manifest["grid"]]}
        atomic_write_json(out / MANIFEST_FILE, manifest)
        for report in reports:
            print(report)
        counts = ", ".join(f"{k}: {v['num_samples']} samples in {len(v['shards'])} shards"
                           for k, v in manifest["splits"].items())
        print(f"token shards in {out} ({counts}); manifest {out / MANIFEST_FILE}")

    def _prepare_split(self, split, dataset, out: Path, fingerprint: str, seed: int, s: dict,
                       text_tok, image_tok, sampler, high=None) -> tuple[dict, SkipLog, tuple | None]:
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
                                                        text_tok, image_tok, sampler, bar, high=high)
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
                     text_tok, image_tok, sampler, bar, high=None) -> tuple[dict, list[SkippedEntry]]:
        strict = bool(getattr(dataset, "strict", False))
        dataset_log = getattr(dataset, "skip_log", None)
        before = len(dataset_log) if dataset_log is not None else 0
        own_skips: list[SkippedEntry] = []
        texts, valids, frame_sets, fps, kept, captions, prefixes = [], [], [], [], [], [], []
        high_sets = []
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
            if high is not None:
                high_frames = _high_frames(high, index, choice.frame_indices, clip, frames)
                if high_frames is None:
                    continue  # the high-res dataset recorded why
                high_sets.append(high_frames)
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
        if high is not None:
            high_tokens = self._encode_frames(high_sets, image_tok, s["encode_batch"])
            if n and tuple(high_tokens.shape[2:]) != tuple(d * high[1] for d in tokens.shape[2:]):
                raise DataError(
                    f"the image tokenizer turned {tuple(high_sets[0].shape[1:3])} px frames into "
                    f"{tuple(high_tokens.shape[2:])} tokens, not {high[1]} x the low-res grid "
                    f"{tuple(tokens.shape[2:])}; use a convolutional image tokenizer (vqvae) that "
                    "encodes any frame size.")
            tensors["frames_high"] = high_tokens.to(torch.int32)
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


def _high_res_node(cfg: DictConfig) -> dict | None:
    """The ``high_res`` node as plain data (None when absent)."""
    node = OmegaConf.select(cfg, "high_res", default=None)
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def _high_res_problems(cfg: DictConfig, registries: Registries) -> list[Problem]:
    """``high_res``: a whole ``scale`` >= 2 and dataset keywords the dataset accepts."""
    node = OmegaConf.select(cfg, "high_res", default=None)
    if node is None:
        return []
    example = "`high_res: {scale: 3, dataset: {render_scale: 3}}`"
    if not isinstance(node, DictConfig):
        return [Problem("high_res", f"must be a mapping, got {node!r}", f"write e.g. {example}")]
    found = [Problem(f"high_res.{key}", "is not a high_res key", f"use scale and dataset, e.g. {example}")
             for key in node if key not in ("scale", "dataset")]
    scale = node.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        found.append(Problem("high_res.scale", f"must be a whole number >= 2, got {scale!r}",
                             "3 is CogView2's super-resolution factor"))
    extra = node.get("dataset") or {}
    if not isinstance(extra, DictConfig) and extra != {}:
        found.append(Problem("high_res.dataset", f"must be a mapping of dataset keywords, got {extra!r}",
                             "e.g. {render_scale: 3} (moving_shapes) or {size: 96} (video_folder)"))
        return found
    dataset = OmegaConf.select(cfg, "dataset", default=None)
    if isinstance(dataset, DictConfig) and dataset.get("name") in registries.names("dataset") and extra:
        spec = registries.get("dataset", dataset.name)
        base = {k: v for k, v in OmegaConf.to_container(dataset, resolve=True).items() if k != "name"}
        own = OmegaConf.to_container(extra, resolve=True)
        found += [p for p in spec.keyword_problems({**base, **own}, where="high_res.dataset")
                  if p.where.rpartition(".")[2] in own]
    return found


def _build_high_split(cfg: DictConfig, registries: Registries, split: str, high_res: dict):
    """The dataset of ``split`` with ``high_res.dataset`` merged over it: the paired high-res frames."""
    node = OmegaConf.to_container(cfg.dataset, resolve=True)
    extra = OmegaConf.select(cfg, f"splits.{split}", default=None)
    if extra is not None:
        node.update(OmegaConf.to_container(extra, resolve=True))
    node.update(high_res.get("dataset") or {})
    return registries.build("dataset", node)


def _high_frames(high, index: int, frame_indices, clip, frames: np.ndarray) -> np.ndarray | None:
    """The same entry's frames from the high-res dataset, checked to be the same clip, ``scale`` x larger."""
    dataset, scale = high
    partial = callable(getattr(dataset, "probe", None)) and callable(getattr(dataset, "read_frames", None))
    other = dataset.probe(index) if partial else dataset[index]
    if other is None:
        return None
    if other.caption != clip.caption:
        raise DataError(f"entry {index}: the high-res dataset gives {other.caption!r} but the low-res one "
                        f"{clip.caption!r}; high_res.dataset must change the frame size only (same seed, "
                        "split and clips), e.g. {render_scale: 3} for moving_shapes.")
    high_frames = dataset.read_frames(index, frame_indices) if partial else other.frames[frame_indices]
    if high_frames is None:
        return None
    want = (frames.shape[0], frames.shape[1] * scale, frames.shape[2] * scale, frames.shape[3])
    if tuple(high_frames.shape) != want:
        raise DataError(f"entry {index}: high-res frames are {list(high_frames.shape)}, not {scale} x the "
                        f"low-res {list(frames.shape)} ({list(want)}); set high_res.dataset so the frames are "
                        f"{scale} times larger (moving_shapes: render_scale: {scale}; video_folder: size).")
    return high_frames


@hookimpl
def register_components():
    return [PrepareTask]
