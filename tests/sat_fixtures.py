"""Tiny SwissArmyTransformer checkpoints for the conversion tests (test_convert.py, test_convert_sr.py).

The key names and shapes are written out from the released checkpoints (SAT model/base_model.py,
CogVideo models/cogvideo_model.py, CogView2 sr_pipeline/dsr_model.py), never from cogframe's own
mapping table, so a test that compares against them checks that table.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LAYER_PARTS = ("input_layernorm", "attention.query_key_value", "attention.dense", "third_layernorm",
               "post_attention_layernorm", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h", "fourth_layernorm")


def sat_backbone_shapes(layers: int, d: int, vocab: int, pos: int, ffn: int | None = None) -> dict:
    """``transformer.*`` keys and shapes of a sandwich-LayerNorm SAT backbone (CogView2's layer)."""
    ffn = ffn or 4 * d
    part_shapes = {"input_layernorm": [(d,), (d,)], "attention.query_key_value": [(3 * d, d), (3 * d,)],
                   "attention.dense": [(d, d), (d,)], "third_layernorm": [(d,), (d,)],
                   "post_attention_layernorm": [(d,), (d,)], "mlp.dense_h_to_4h": [(ffn, d), (ffn,)],
                   "mlp.dense_4h_to_h": [(d, ffn), (d,)], "fourth_layernorm": [(d,), (d,)]}
    shapes = {"transformer.word_embeddings.weight": (vocab, d), "transformer.position_embeddings.weight": (pos, d)}
    for i in range(layers):
        for part in LAYER_PARTS:
            w, b = part_shapes[part]
            shapes[f"transformer.layers.{i}.{part}.weight"] = w
            shapes[f"transformer.layers.{i}.{part}.bias"] = b
    shapes["transformer.final_layernorm.weight"] = shapes["transformer.final_layernorm.bias"] = (d,)
    return shapes


def sat_mixin_shapes(layers: int, d: int, extra_rows: int, *, attn_distribution: bool) -> dict:
    """``mixins.*`` keys and shapes: the ``extra_position_embedding`` rows and the per-layer
    ``attention_plus`` QKV and dense; CogVideo's mixin adds ``attn_distribution`` (the DSR's has none)."""
    shapes = {"mixins.extra_position_embedding.position_embeddings.weight": (extra_rows, d)}
    for i in range(layers):
        shapes[f"mixins.attention_plus.query_key_value.{i}.weight"] = (3 * d, d)
        shapes[f"mixins.attention_plus.query_key_value.{i}.bias"] = (3 * d,)
        shapes[f"mixins.attention_plus.dense.{i}.weight"] = (d, d)
        shapes[f"mixins.attention_plus.dense.{i}.bias"] = (d,)
        if attn_distribution:
            shapes[f"mixins.attention_plus.attn_distribution.{i}"] = (d,)
    return shapes


def write_sat_folder(folder: Path, state: dict, sat_config: dict, *, iteration: str = "1000",
                     extra_payload: dict | None = None) -> None:
    """Write ``state`` as SAT saves it: latest, <iteration>/mp_rank_00_model_states.pt, model_config.json."""
    (folder / iteration).mkdir(parents=True)
    torch.save({"module": state, **(extra_payload or {})}, folder / iteration / "mp_rank_00_model_states.pt")
    (folder / "latest").write_text(iteration)
    (folder / "model_config.json").write_text(json.dumps(sat_config, indent=4))


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, for bit-exact comparisons (``torch.equal`` calls -0.0 and 0.0 equal)."""
    return t.contiguous().flatten().view(torch.uint8)
