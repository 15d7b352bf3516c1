"""SwissArmyTransformer (SAT) checkpoint names and configs <-> cogframe's (SAT model/base_model.py and
training/model_io.py; CogVideo models/cogvideo_model.py; CogView2 sr_pipeline/dsr_model.py).

The released CogView2, CogVideo and CogView2-DSR weights are SAT checkpoints. Two things differ
from cogframe:

* **Tensor names.** :data:`SAT_KEY_TABLE` is the one mapping, one row per tensor family, to be
  read against the released checkpoints' state-dict keys, with one column per cogframe model kind
  (``CogVideoTransformer`` for CogView2 and the CogVideo stages, ``SuperResolutionTransformer``
  for ``cogview2-dsr``). SAT names a mixin's tensors ``mixins.<name>.<its own names>`` (SAT's
  ``BaseModel.add_mixin`` puts mixins in the ``mixins`` ModuleDict), so CogVideo's and DSR's
  ``attention_plus`` share SAT names but not cogframe names. ``{i}`` is a layer index, ``{p}``
  is ``weight`` or ``bias``. Values are never reshaped or transposed: both sides store PyTorch
  ``[out, in]`` linear weights with QKV rows ``[Q; K; V]``, so every tensor maps one to one.
* **Model config.** SAT's ``model_config.json`` holds argparse values (``num_attention_heads``,
  ``layout = "64, 464, 2064"``, ``window_size = -1``, ``cogvideo_stage`` ...);
  :func:`preset_from_sat_config` turns it into a cogframe preset dict (the format of
  ``core/presets.py``) and :func:`sat_config_from_preset` goes back (the DSR model's config:
  ``sat_sr_config.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from cogframe.core.model.presets import PRESETS
from cogframe.errors import ConfigError, DataError

__all__ = [
    "COGVIDEO",
    "SUPER_RESOLUTION",
    "MODEL_KINDS",
    "KeyRow",
    "SAT_KEY_TABLE",
    "ICETK_IMAGE_TOKENS",
    "CogVideoSatFacts",
    "sat_to_cogframe_key",
    "cogframe_to_sat_key",
    "rename_keys",
    "preset_from_sat_config",
    "sat_config_from_preset",
]


COGVIDEO = "cogvideo"
"""Model kind of a CogView2 text-to-image model or a CogVideo stage (``CogVideoTransformer`` names)."""
SUPER_RESOLUTION = "super_resolution"
"""Model kind of CogView2's direct super-resolution model (``SuperResolutionTransformer`` names)."""
MODEL_KINDS = (COGVIDEO, SUPER_RESOLUTION)


@dataclass(frozen=True)
class KeyRow:
    """One family of tensors: its SAT name and its name in each cogframe model kind.

    Attributes:
        sat: The SAT name pattern.
        cogframe: The ``CogVideoTransformer`` name (CogView2 text-to-image, CogVideo stages), or
            None when that model has no such tensor.
        dsr: The ``SuperResolutionTransformer`` name (``cogview2-dsr``), or None likewise.
    """

    sat: str
    cogframe: str | None
    dsr: str | None = None

    def target(self, kind: str) -> str | None:
        """The cogframe name pattern in model kind ``kind``."""
        return self.dsr if kind == SUPER_RESOLUTION else self.cogframe


# fmt: off
SAT_KEY_TABLE: tuple[KeyRow, ...] = (
    #       SAT (released checkpoints)                                  CogVideo / CogView2 model                  DSR model (cogview2-dsr)
    # ---- CogView2 backbone (every model; frozen in CogVideo and in DSR) ------------------------------------------------------------------
    KeyRow("transformer.word_embeddings.weight",                      "word_embeddings.weight",                   "backbone.word_embeddings.weight"),
    KeyRow("transformer.position_embeddings.weight",                  "position_embeddings.weight",               "backbone.position_embeddings.weight"),
    KeyRow("transformer.layers.{i}.input_layernorm.{p}",              "layers.{i}.input_layernorm.{p}",           "backbone.layers.{i}.input_layernorm.{p}"),
    KeyRow("transformer.layers.{i}.attention.query_key_value.{p}",    "layers.{i}.attention.query_key_value.{p}", "backbone.layers.{i}.attention.query_key_value.{p}"),
    KeyRow("transformer.layers.{i}.attention.dense.{p}",              "layers.{i}.attention.dense.{p}",           "backbone.layers.{i}.attention.dense.{p}"),
    KeyRow("transformer.layers.{i}.third_layernorm.{p}",              "layers.{i}.third_layernorm.{p}",           "backbone.layers.{i}.third_layernorm.{p}"),
    KeyRow("transformer.layers.{i}.post_attention_layernorm.{p}",     "layers.{i}.post_attention_layernorm.{p}",  "backbone.layers.{i}.post_attention_layernorm.{p}"),
    KeyRow("transformer.layers.{i}.mlp.dense_h_to_4h.{p}",            "layers.{i}.mlp.dense_h_to_4h.{p}",         "backbone.layers.{i}.mlp.dense_h_to_4h.{p}"),
    KeyRow("transformer.layers.{i}.mlp.dense_4h_to_h.{p}",            "layers.{i}.mlp.dense_4h_to_h.{p}",         "backbone.layers.{i}.mlp.dense_4h_to_h.{p}"),
    KeyRow("transformer.layers.{i}.fourth_layernorm.{p}",             "layers.{i}.fourth_layernorm.{p}",          "backbone.layers.{i}.fourth_layernorm.{p}"),
    KeyRow("transformer.final_layernorm.{p}",                         "final_layernorm.{p}",                      "backbone.final_layernorm.{p}"),
    # ---- mixins: CogVideo stage 1 / stage 2 (identical names in both stages) and DSR (no attn_distribution) -------------------------------
    KeyRow("mixins.extra_position_embedding.position_embeddings.weight", "extra_position_embeddings.weight",     "extra_position_embeddings.weight"),
    KeyRow("mixins.attention_plus.query_key_value.{i}.{p}",           "layers.{i}.temporal.query_key_value.{p}",  "attention_plus.query_key_value.{i}.{p}"),
    KeyRow("mixins.attention_plus.dense.{i}.{p}",                     "layers.{i}.temporal.dense.{p}",            "attention_plus.dense.{i}.{p}"),
    KeyRow("mixins.attention_plus.attn_distribution.{i}",             "layers.{i}.temporal.alpha_logit",          None),
)
# fmt: on

_FIELDS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)"}


def _compile(pattern: str) -> re.Pattern[str]:
    regex = re.escape(pattern)
    for name, group in _FIELDS.items():
        regex = regex.replace(re.escape("{" + name + "}"), group)
    return re.compile(f"^{regex}$")


def _check_kind(kind: str) -> str:
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; use one of {', '.join(MODEL_KINDS)}.")
    return kind


_SAT_TO_COGFRAME = {kind: [(_compile(row.sat), row.target(kind)) for row in SAT_KEY_TABLE if row.target(kind)]
                    for kind in MODEL_KINDS}
_COGFRAME_TO_SAT = {kind: [(_compile(row.target(kind)), row.sat) for row in SAT_KEY_TABLE if row.target(kind)]
                    for kind in MODEL_KINDS}


def _translate(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, target in rules:
        match = pattern.match(key)
        if match:
            return target.format(**match.groupdict())
    return None


def sat_to_cogframe_key(key: str, kind: str = COGVIDEO) -> str | None:
    """cogframe's name for the SAT tensor ``key`` in model kind ``kind``, or None when no table row matches it."""
    return _translate(key, _SAT_TO_COGFRAME[_check_kind(kind)])


def cogframe_to_sat_key(key: str, kind: str = COGVIDEO) -> str | None:
    """SAT's name for the cogframe tensor ``key`` of model kind ``kind``, or None when no table row matches it."""
    return _translate(key, _COGFRAME_TO_SAT[_check_kind(kind)])


def rename_keys(keys: Iterable[str], *, to: str, kind: str = COGVIDEO) -> tuple[dict[str, str], list[str]]:
    """Maps names through :data:`SAT_KEY_TABLE`.

    Args:
        keys: Tensor names on one side.
        to: ``"cogframe"`` (the keys are SAT names) or ``"sat"`` (the keys are cogframe names).
        kind: The cogframe model kind (``"cogvideo"`` or ``"super_resolution"``): which column.

    Returns:
        ``(mapping, unknown)``: ``mapping`` from each known key to its name on the other side, and
        the keys that no row matches, in their input order.
    """
    translate = sat_to_cogframe_key if to == "cogframe" else cogframe_to_sat_key
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    for key in keys:
        target = translate(key, kind)
        if target is None:
            unknown.append(key)
        else:
            mapping[key] = target
    return mapping, unknown


# ================================================================================== configs
ICETK_IMAGE_TOKENS = 20000
"""Image ids of the released models: icetk's codebook (THUDM/icetk ``num_image_tokens``); SAT configs do not store it."""


@dataclass(frozen=True)
class CogVideoSatFacts:
    """Values CogVideo's SAT code hard-codes instead of storing in ``model_config.json``."""

    image_position_offset: int = 512  # CogVideoModel.position_embedding_forward: `pos - (512 + 400)`
    default_window_size: int = 10  # CogVideoModel.add_model_specific_args
    default_additional_seqlen: int = 2000


_FACTS = CogVideoSatFacts()
_STAGES = {1: "sequential", 2: "interpolation"}


def _require(cfg: Mapping[str, Any], keys: tuple[str, ...], source: str) -> None:
    missing = [k for k in keys if cfg.get(k) is None]
    if missing:
        raise DataError(
            f"{source} lacks {', '.join(missing)}; a SwissArmyTransformer model_config.json lists the "
            "architecture (num_layers, hidden_size, num_attention_heads, vocab_size, "
            "max_sequence_length). Use the model_config.json shipped with the checkpoint.")


def _parse_layout(value: Any, source: str) -> tuple[int, int, int]:
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        text_len, first_end, total = (int(str(p).strip()) for p in parts)
    except ValueError:
        raise DataError(f"{source}: layout {value!r} is not three integers 'text_len, text_len + "
                        "frame_len, total' (CogVideo: '64, 464, 2064'); fix model_config.json.") from None
    frame_len = first_end - text_len
    side = math.isqrt(max(frame_len, 0))
    if frame_len <= 0 or side * side != frame_len or (total - text_len) % frame_len:
        raise DataError(f"{source}: layout {value!r} does not describe whole square frames after "
                        f"{text_len} text tokens; fix model_config.json.")
    return text_len, side, (total - text_len) // frame_len


def preset_from_sat_config(sat_cfg: Mapping[str, Any], *, image_vocab_size: int | None = None,
                           source: str = "model_config.json") -> dict[str, Any]:
    """A cogframe preset dict from a SAT ``model_config.json``.

    The stage comes from ``cogvideo_stage`` (absent: a CogView2 text-to-image model); the layout from
    ``layout``/``max_sequence_length``/``additional_seqlen``. A stage-1 model always gets full
    causal temporal attention, whatever ``window_size`` says, because the released stage-1
    inference forces ``window_size=-1``; a stage-2 model takes its window from ``window_size``
    (``-1``: full causal attention, else a square window shifted by half; default 10).

    Args:
        sat_cfg: The parsed ``model_config.json``.
        image_vocab_size: Image ids at the start of the vocabulary; default: the config's
            ``image_vocab_size`` if present, else icetk's 20000.
        source: How messages name the config.

    Raises:
        DataError: A missing architecture key, model parallelism, a non-sandwich layer norm or an
            unreadable layout.
    """
    _require(sat_cfg, ("num_layers", "hidden_size", "num_attention_heads", "vocab_size",
                       "max_sequence_length"), source)
    if int(sat_cfg.get("model_parallel_size") or 1) != 1:
        raise DataError(f"{source}: model_parallel_size is {sat_cfg['model_parallel_size']}; cogframe reads "
                        "unsharded (model_parallel_size 1) checkpoints like the released ones. Merge the "
                        "mp_rank_XX shards with SwissArmyTransformer first.")
    order = sat_cfg.get("layernorm_order", "sandwich")
    if order != "sandwich":
        raise DataError(f"{source}: layernorm_order is {order!r}; cogframe's layers are Sandwich-LN "
                        "(CogView2/CogVideo). This checkpoint is a different architecture.")
    heads, hidden = int(sat_cfg["num_attention_heads"]), int(sat_cfg["hidden_size"])
    head_dim = sat_cfg.get("hidden_size_per_attention_head")
    if head_dim is not None and int(head_dim) * heads != hidden:
        raise DataError(f"{source}: hidden_size_per_attention_head {head_dim} x {heads} heads != hidden_size "
                        f"{hidden}; cogframe needs head_dim = hidden_size / heads.")

    base = PRESETS["cogview2_6b"]["layout"]
    stage_id = sat_cfg.get("cogvideo_stage")
    video = stage_id is not None
    if video and int(stage_id) not in _STAGES:
        raise DataError(f"{source}: cogvideo_stage {stage_id!r} is not 1 or 2.")
    if "layout" in sat_cfg:
        text_len, side, frames = _parse_layout(sat_cfg["layout"], source)
    else:
        text_len, side, frames = base["text_len"], base["frame_height"], 5 if video else 1
    preset: dict[str, Any] = {
        "num_layers": int(sat_cfg["num_layers"]),
        "hidden_size": hidden,
        "num_heads": heads,
        "vocab_size": int(sat_cfg["vocab_size"]),
        "image_vocab_size": int(image_vocab_size or sat_cfg.get("image_vocab_size") or ICETK_IMAGE_TOKENS),
        "stage": _STAGES[int(stage_id)] if video else "text_to_image",
        "layout": {
            "text_len": text_len,
            "frames": frames if video else 1,
            "frame_height": side,
            "frame_width": side,
            "image_position_offset": int(sat_cfg.get("image_position_offset", _FACTS.image_position_offset)),
            "base_position_rows": int(sat_cfg["max_sequence_length"]),
            "extra_position_rows": int(sat_cfg.get("additional_seqlen", _FACTS.default_additional_seqlen))
            if video else 0,
        },
    }
    if video and int(stage_id) == 1:
        # The release's stage-1 inference class (InferenceModel_Sequential in THUDM/CogVideo
        # cogvideo_pipeline.py) passes window_size=-1 whatever model_config.json holds, and the
        # stage-1 training script trains with --window-size -1: stage 1 is full causal.
        preset["temporal"] = {"window": None}
    elif video:
        window = int(sat_cfg.get("window_size", _FACTS.default_window_size))
        preset["temporal"] = ({"window": None} if window == -1
                              else {"window": [window, window], "shift": [window // 2, window // 2]})
    if sat_cfg.get("inner_hidden_size") is not None:
        preset["ffn_hidden_size"] = int(sat_cfg["inner_hidden_size"])
    if sat_cfg.get("hidden_dropout") is not None:
        # SAT's BaseTransformer uses hidden_dropout for the embedding dropout too.
        preset["hidden_dropout"] = preset["embedding_dropout"] = float(sat_cfg["hidden_dropout"])
    if sat_cfg.get("attention_dropout") is not None:
        preset["attention_dropout"] = float(sat_cfg["attention_dropout"])
    if sat_cfg.get("layernorm_epsilon") is not None:
        preset["layernorm_eps"] = float(sat_cfg["layernorm_epsilon"])
    return preset


def sat_config_from_preset(preset: Mapping[str, Any]) -> dict[str, Any]:
    """A SAT ``model_config.json`` for a cogframe preset dict (the inverse of
    :func:`preset_from_sat_config` for every model SAT's CogVideoModel can express).

    Raises:
        DataError: The preset uses something SAT's CogVideo code cannot express (a non-square frame,
            window or a shift other than half the window, a temporal extent, a windowed stage 1).
    """
    layout = preset["layout"]
    stage = preset.get("stage", "text_to_image")
    stage = getattr(stage, "value", stage)
    video = stage != "text_to_image"
    out: dict[str, Any] = {
        "model_class": "CogVideoModel" if video else "BaseModel",
        "num_layers": int(preset["num_layers"]),
        "hidden_size": int(preset["hidden_size"]),
        "num_attention_heads": int(preset["num_heads"]),
        "vocab_size": int(preset["vocab_size"]),
        "hidden_dropout": float(preset.get("hidden_dropout", 0.1)),
        "attention_dropout": float(preset.get("attention_dropout", 0.1)),
        "layernorm_order": "sandwich",
        "model_parallel_size": 1,
        "max_sequence_length": int(layout["base_position_rows"]),
    }
    if preset.get("ffn_hidden_size") is not None:
        out["inner_hidden_size"] = int(preset["ffn_hidden_size"])
    if float(preset.get("layernorm_eps", 1e-5)) != 1e-5:
        out["layernorm_epsilon"] = float(preset["layernorm_eps"])
    if layout["frame_height"] != layout["frame_width"]:
        raise DataError("SAT's CogVideoModel needs square frames (frame_height == frame_width); this "
                        "model cannot be written as a SAT checkpoint.")
    frame_len = layout["frame_height"] * layout["frame_width"]
    text_len = layout["text_len"]
    # CogVideo reads `layout`; a text-to-image SAT model ignores it, but it keeps cogframe's layout.
    out["layout"] = f"{text_len}, {text_len + frame_len}, {text_len + layout['frames'] * frame_len}"
    if video:
        out["additional_seqlen"] = int(layout["extra_position_rows"])
        out["cogvideo_stage"] = 1 if stage == "sequential" else 2
        out["window_size"] = _sat_window(preset.get("temporal") or {})
        if out["cogvideo_stage"] == 1 and out["window_size"] != -1:
            raise DataError(
                f"this stage-1 model uses a {out['window_size']}x{out['window_size']} temporal window, but "
                "CogVideo's stage-1 code (and cogframe's SAT reader) always runs stage 1 with full causal "
                "temporal attention (window_size=-1), so the SAT checkpoint would not reproduce it. Convert "
                "a stage-1 model trained with model.overrides.temporal.window=null, or keep it as cogframe "
                "weights.")
    # cogframe-only keys for models that differ from CogVideo's hard-coded values; SAT copies unknown
    # config keys onto its args and ignores them.
    if int(preset["image_vocab_size"]) != ICETK_IMAGE_TOKENS:
        out["image_vocab_size"] = int(preset["image_vocab_size"])
    if int(layout["image_position_offset"]) != _FACTS.image_position_offset:
        out["image_position_offset"] = int(layout["image_position_offset"])
    return out


def _sat_window(temporal: Mapping[str, Any]) -> int:
    if temporal.get("temporal_extent") is not None:
        raise DataError("SAT's CogVideoModel has no temporal_extent; this model cannot be written as a "
                        "SAT checkpoint.")
    window = temporal.get("window")
    if window is None:
        return -1
    rows, cols = (window, window) if isinstance(window, int) else window
    shift = temporal.get("shift")
    shift = (rows // 2, cols // 2) if shift is None else ((shift, shift) if isinstance(shift, int) else shift)
    if rows != cols or tuple(shift) != (rows // 2, rows // 2):
        raise DataError(f"SAT's CogVideoModel supports square windows shifted by half only; this model has "
                        f"window {list(window)} and shift {list(shift)}, so it cannot be written as a SAT "
                        "checkpoint.")
    return int(rows)
