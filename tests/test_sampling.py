"""Sampling: KV-cached decoding vs the full forward, CFG, stage 1/2 flows, samplers, helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cogframe.core.generation.decoder import DecodeOptions, decode_frames
from cogframe.core.generation.guidance import combine_guidance
from cogframe.core.model.inherit import video_model_from_text_to_image
from cogframe.core.generation.interpolation import (
    blend_frames,
    frames_after,
    merge_windows,
    repeat_frames,
    split_windows,
)
from cogframe.core.model.layout import Stage
from cogframe.core.model.presets import build_model, model_config
from cogframe.core.generation.prompts import TextPrompt, encode_prompts, video_prompts
from cogframe.core.generation.generate import generate_first_frame, generate_key_frames, generate_video, interpolate
from cogframe.core.generation.token_sampling import SlotNoise, kmeans_clusters, load_clusters, sample_categorical
from cogframe.errors import ConfigError, DataError, ShapeError
from cogframe.plugins import get_registries
from cogframe.plugins.token_samplers import (
    ClusterSampler,
    GreedySampler,
    TemperatureSampler,
    TopKSampler,
    TopPSampler,
)

BOI = 300
SMALL = {"num_layers": 2, "hidden_size": 32, "num_heads": 2}


@pytest.fixture(scope="module")
def stage1():
    torch.manual_seed(0)
    return build_model("tiny_stage1", overrides=SMALL).eval()


@pytest.fixture(scope="module")
def stage2():
    torch.manual_seed(1)
    return build_model("tiny_stage2", overrides=SMALL).eval()


def _prompt(layout, batch=2, seed=1, pad=3) -> TextPrompt:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(256, 384, (batch, layout.text_len), generator=g)
    valid = torch.ones(batch, layout.text_len, dtype=torch.bool)
    valid[0, :pad] = False
    return TextPrompt(ids, valid)


def _full_input(layout, prompt, frames):
    inp, _ = layout.build_input(prompt.ids, frames, boi_id=BOI)
    return inp


# ------------------------------------------------------------------------------ KV cache
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "waves"])
def test_kv_cache_steps_equal_the_full_forward(stage1, parallel):
    layout = stage1.config.layout
    prompt = _prompt(layout)
    options = DecodeOptions(TemperatureSampler(1.0), seed=5, parallel=parallel)
    result = generate_key_frames(stage1, prompt, boi_id=BOI, options=options, return_logits=True)
    with torch.no_grad():
        full = stage1(_full_input(layout, prompt, result.frames), text_valid=prompt.valid)
    generated = torch.cat([torch.arange(r.start, r.stop) for r in map(layout.frame_range, range(1, 5))])
    assert torch.allclose(result.logits[:, generated], full[:, generated], atol=1e-5, rtol=1e-5)


def test_kv_cache_steps_equal_the_full_forward_stage2(stage2):
    layout = stage2.config.layout
    prompt = _prompt(layout)
    given = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(3))
    result = decode_frames(stage2, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler()),
                           given_frames=(0, 2, 4), generated_frames=(1, 3), given=given, return_logits=True)
    slots = layout.inference_slots(Stage.INTERPOLATION)
    with torch.no_grad():
        inputs = _full_input(layout, prompt, result.frames)[:, slots]
        full = stage2(inputs, slots=slots, text_valid=prompt.valid)
    natural = torch.zeros_like(full)
    natural[:, slots] = full
    generated = torch.cat([torch.arange(r.start, r.stop) for r in map(layout.frame_range, (1, 3))])
    assert torch.allclose(result.logits[:, generated], natural[:, generated], atol=1e-5, rtol=1e-5)
    # Greedy: every generated token is the argmax of the full forward's logits at its slot.
    tokens = result.frames.reshape(2, 5, -1)[:, [1, 3]].reshape(2, -1)
    assert torch.equal(tokens, natural[:, generated].argmax(-1))


# ------------------------------------------------------------------------------ first frame
def test_first_frame_is_plain_cogview2():
    torch.manual_seed(0)
    t2i = build_model("tiny_t2i", overrides=SMALL).eval()
    video = video_model_from_text_to_image(model_config("tiny_stage1", SMALL), t2i.state_dict()).eval()
    prompt = _prompt(video.config.layout)
    options = DecodeOptions(TopKSampler(k=30), seed=11)
    from_video = generate_first_frame(video, prompt, boi_id=BOI, options=options)
    from_t2i = decode_frames(t2i, prompt, boi_id=BOI, options=options, generated_frames=(0,))
    assert torch.equal(from_video.frames, from_t2i.frames)
    assert from_video.passes == 1 + video.config.layout.tokens_per_frame


def test_key_frames_keep_a_given_first_frame_and_accept_separate_first_frame_settings(stage1):
    layout = stage1.config.layout
    prompt = _prompt(layout)
    first = torch.randint(0, 256, (2, 8, 8))
    greedy = DecodeOptions(GreedySampler())
    out = generate_key_frames(stage1, prompt, boi_id=BOI, options=greedy, first_frame=first)
    assert torch.equal(out.frames[:, 0], first)
    assert out.passes == 1 + 4 * layout.tokens_per_frame
    first_prompt = _prompt(layout, seed=9, pad=0)
    top5 = DecodeOptions(TopKSampler(k=5), seed=1)
    out2 = generate_key_frames(stage1, prompt, boi_id=BOI, options=greedy, first_prompt=first_prompt,
                               first_options=top5)
    alone = generate_first_frame(stage1, first_prompt, boi_id=BOI, options=top5)
    assert torch.equal(out2.frames[:, 0], alone.frames[:, 0])


# ------------------------------------------------------------------------------ guidance
def test_guidance_one_equals_plain_decoding_exactly(stage1):
    layout = stage1.config.layout
    prompt = _prompt(layout)
    negative = _prompt(layout, batch=1, seed=4, pad=10)
    first = torch.randint(0, 256, (2, 8, 8))
    sampler = TemperatureSampler(1.0)
    plain = generate_key_frames(stage1, prompt, boi_id=BOI, first_frame=first, return_logits=True,
                                options=DecodeOptions(sampler, seed=2, parallel=True))
    guided = generate_key_frames(stage1, prompt, boi_id=BOI, first_frame=first, return_logits=True,
                                 options=DecodeOptions(sampler, seed=2, guidance=1.0, negative=negative,
                                                       parallel=True))
    assert torch.equal(plain.frames, guided.frames)
    assert torch.equal(plain.logits, guided.logits)
    strong = generate_key_frames(stage1, prompt, boi_id=BOI, first_frame=first,
                                 options=DecodeOptions(sampler, seed=2, guidance=3.0, negative=negative,
                                                       parallel=True))
    assert not torch.equal(strong.frames, plain.frames)


def test_combine_guidance_is_the_cfg_formula():
    cond, neg = torch.randn(3, 7), torch.randn(3, 7)
    assert torch.allclose(combine_guidance(cond, neg, 3.0), neg + 3.0 * (cond - neg), atol=1e-6)
    assert torch.equal(combine_guidance(cond, neg, 1.0), cond)


def test_guidance_without_negative_prompt_is_an_error(stage1):
    prompt = _prompt(stage1.config.layout)
    with pytest.raises(ConfigError, match="negative prompt"):
        generate_key_frames(stage1, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler(), guidance=3.0))


# ------------------------------------------------------------------------------ stage 2
def test_interpolation_recursion_5_9_17_33_keeps_given_frames(stage2):
    layout = stage2.config.layout
    prompt = _prompt(layout)
    key = torch.randint(0, 256, (2, 5, 8, 8), generator=torch.Generator().manual_seed(0))
    frames, counts = key, [5]
    for r in range(3):
        out = interpolate(stage2, frames, [prompt], boi_id=BOI,
                          options=DecodeOptions(GreedySampler(), parallel=True))
        assert torch.equal(out.frames[:, 0::2], frames)  # given frames unchanged
        frames = out.frames
        counts.append(frames.shape[1])
    assert counts == [5, 9, 17, 33]
    assert frames_after(5, 3) == 33


def test_interpolation_is_independent_of_window_batching(stage2):
    prompt = _prompt(stage2.config.layout)
    key = torch.randint(0, 256, (2, 9, 8, 8), generator=torch.Generator().manual_seed(1))
    options = DecodeOptions(TopKSampler(k=40), seed=3)
    together = interpolate(stage2, key, [prompt], boi_id=BOI, options=options)
    chunked = interpolate(stage2, key, [prompt], boi_id=BOI, options=options, window_batch=3)
    assert torch.equal(together.frames, chunked.frames)


def test_wrong_stage_and_training_mode_are_refused(stage1, stage2):
    prompt = _prompt(stage1.config.layout)
    with pytest.raises(ConfigError, match="interpolation"):
        interpolate(stage1, torch.zeros(2, 5, 8, 8, dtype=torch.long), [prompt], boi_id=BOI,
                    options=DecodeOptions(GreedySampler()))
    stage2.train()
    try:
        with pytest.raises(ConfigError, match="eval"):
            interpolate(stage2, torch.zeros(2, 5, 8, 8, dtype=torch.long), [prompt], boi_id=BOI,
                        options=DecodeOptions(GreedySampler()))
    finally:
        stage2.eval()
    with pytest.raises(ShapeError, match="overlapping windows"):
        split_windows(torch.zeros(1, 4, 2, 2), 3)


def test_empty_prompt_is_refused(stage1):
    layout = stage1.config.layout
    prompt = TextPrompt(torch.zeros(1, layout.text_len, dtype=torch.long),
                        torch.zeros(1, layout.text_len, dtype=torch.bool))
    with pytest.raises(ConfigError, match="empty prompt"):
        generate_key_frames(stage1, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler()))


# ------------------------------------------------------------------------------ video
class _FakeTokenizer:
    """encode_prompt as the sentencepiece tokenizer does it: left-padded (ids, valid)."""

    def __init__(self):
        self.prefixes = []

    def encode_prompt(self, caption, text_len, prefix=None):
        self.prefixes.append(prefix)
        tokens = [256 + (ord(c) % 100) for c in ((prefix or "") + "|" + caption)][-text_len:]
        ids = torch.full((text_len,), 383, dtype=torch.long)
        valid = torch.zeros(text_len, dtype=torch.bool)
        ids[text_len - len(tokens):] = torch.tensor(tokens)
        valid[text_len - len(tokens):] = True
        return ids, valid


def test_video_prompts_carry_the_duration_prefixes():
    tok = _FakeTokenizer()
    prompts = video_prompts(tok, ["a cat", "a dog"], 16, negative_caption="video")
    assert tok.prefixes == [None, None, "4.0s", "4.0s", "2.0s", "2.0s", "1.0s", "1.0s", "0.5s", "0.5s",
                            "4.0s", "2.0s", "1.0s", "0.5s"]
    assert prompts.key_frames.ids.shape == (2, 16) and len(prompts.rounds) == 3
    assert prompts.negative_key_frames.batch == 1
    with pytest.raises(ConfigError, match="not seen in training"):
        video_prompts(tok, ["a cat"], 16, known_rates=[1, 2, 4])
    with pytest.raises(ConfigError, match="empty"):
        encode_prompts(tok, ["  "], 16)
    with pytest.raises(ConfigError, match="positive"):
        video_prompts(tok, ["a cat"], 16, key_fps=0)


def test_generate_video_two_stages(stage1, stage2):
    prompts = video_prompts(_FakeTokenizer(), ["a cat", "a dog"], stage1.config.layout.text_len,
                            rounds=1, negative_caption="video")
    options = DecodeOptions(GreedySampler(), guidance=2.0, parallel=True)
    video = generate_video(stage1, stage2, prompts, boi_id=BOI, options=options,
                           stage2_options=DecodeOptions(GreedySampler(), parallel=True))
    assert video.key_frames.shape == (2, 5, 8, 8) and video.frames.shape == (2, 9, 8, 8)
    assert torch.equal(video.frames[:, 0::2], video.key_frames)
    # The one stage-2 path: interpolate() on the key frames gives generate_video's frames.
    again = interpolate(stage2, video.key_frames, list(prompts.rounds), boi_id=BOI,
                        options=DecodeOptions(GreedySampler(), parallel=True))
    assert torch.equal(again.frames, video.frames)
    with pytest.raises(ConfigError, match="stage-2 model"):
        generate_video(stage1, repeat_frames, prompts, boi_id=BOI, options=options)


def test_video_prompts_put_the_video_suffix_on_stage_1_only():
    """The release: stage 2 encodes the raw caption; " 视频" goes on the stage-1 prompt only."""
    seen = []

    class Recording(_FakeTokenizer):
        def encode_prompt(self, caption, text_len, prefix=None):
            seen.append((caption, prefix))
            return super().encode_prompt(caption, text_len, prefix)

    video_prompts(Recording(), ["a cat"], 16, rounds=2, first_frame_suffix=" HD", video_suffix=" 视频")
    assert seen == [("a cat HD", None), ("a cat 视频", "4.0s"), ("a cat", "2.0s"), ("a cat", "1.0s")]


# ------------------------------------------------------------------------------ stage-2 prefix mask
def _release_prefix_backend(given_frames):
    """Dense attention whose given-frame queries see text and every given slot (no window)."""
    import dataclasses

    from cogframe.core.model.attention import dense_sdpa_attention

    def backend(q, k, v, mask, q_slots, k_slots, text_valid, **kwargs):
        if mask is None or not mask.is_temporal:
            return dense_sdpa_attention(q, k, v, mask, q_slots, k_slots, text_valid, **kwargs)
        frame = mask.layout.coords(q_slots).t
        given = torch.isin(frame, torch.tensor(given_frames)) & (q_slots >= mask.layout.text_len)
        unmasked = dataclasses.replace(mask, window=None, shift=(0, 0), temporal_extent=None)
        out = dense_sdpa_attention(q, k, v, mask, q_slots, k_slots, text_valid, **kwargs)
        if bool(given.any()):
            free = dense_sdpa_attention(q, k, v, unmasked, q_slots, k_slots, text_valid, **kwargs)
            out = torch.where(given.view(1, 1, -1, 1), free, out)
        return out

    return backend


def test_unmasked_prefix_reproduces_the_release_prefix_pass():
    """unmasked_prefix: the given frames' prefix pass runs the temporal channel without its window."""
    torch.manual_seed(1)
    release = build_model("tiny_stage2", overrides=SMALL,
                          temporal_attention=_release_prefix_backend((0, 2, 4))).eval()
    torch.manual_seed(1)
    model = build_model("tiny_stage2", overrides=SMALL).eval()
    assert model.config.temporal.window is not None  # otherwise the two masks would agree
    layout = model.config.layout
    prompt = _prompt(layout)
    given = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(3))
    kwargs = dict(boi_id=BOI, given_frames=(0, 2, 4), generated_frames=(1, 3), given=given, return_logits=True)
    unmasked = decode_frames(model, prompt, options=DecodeOptions(GreedySampler(), unmasked_prefix=True), **kwargs)
    trained = decode_frames(model, prompt, options=DecodeOptions(GreedySampler()), **kwargs)
    slots = layout.inference_slots(Stage.INTERPOLATION)
    with torch.no_grad():  # one full forward, given-frame rows unmasked, generated rows as in training
        full = release(_full_input(layout, prompt, unmasked.frames)[:, slots], slots=slots, text_valid=prompt.valid)
    natural = torch.zeros_like(full)
    natural[:, slots] = full
    generated = torch.cat([torch.arange(r.start, r.stop) for r in map(layout.frame_range, (1, 3))])
    assert torch.allclose(unmasked.logits[:, generated], natural[:, generated], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(trained.logits[:, generated], natural[:, generated], atol=1e-3)
    # The model's own masks are back to the training ones afterwards.
    again = decode_frames(model, prompt, options=DecodeOptions(GreedySampler()), **kwargs)
    assert torch.equal(again.logits, trained.logits)


# ------------------------------------------------------------------------------ samplers
ALL_SAMPLERS = [GreedySampler(), TemperatureSampler(0.8), TopKSampler(k=5), TopPSampler(p=0.7),
                ClusterSampler(top_k=3, clusters=None, image_tokenizer=type("T", (), {
                    "codebook": torch.randn(64, 4, generator=torch.Generator().manual_seed(0))})())]


@pytest.mark.parametrize("sampler", ALL_SAMPLERS, ids=["greedy", "temperature", "top_k", "top_p", "cluster"])
def test_samplers_are_row_wise_and_keyed_by_slot(sampler):
    logits = torch.randn(12, 64, generator=torch.Generator().manual_seed(1)) * 3
    slots = torch.arange(100, 112)
    noise = SlotNoise(42)
    batch = sampler(logits, slots, noise.rows(torch.zeros(12, dtype=torch.long), slots))
    for i in range(12):
        row = slice(i, i + 1)
        one = sampler(logits[row], slots[row], noise.rows(torch.zeros(1, dtype=torch.long), slots[row]))
        assert int(one) == int(batch[i])
    assert batch.dtype == torch.long and bool((batch >= 0).all()) and bool((batch < 64).all())


def test_filters_restrict_the_support():
    logits = torch.randn(2000, 64, generator=torch.Generator().manual_seed(2))
    slots = torch.arange(2000)
    rows = SlotNoise(1).rows(torch.zeros(2000, dtype=torch.long), slots)
    top5 = logits.topk(5).indices
    picked = TopKSampler(k=5)(logits, slots, rows)
    assert bool((top5 == picked.unsqueeze(1)).any(1).all())
    assert len(set(picked.tolist())) > 5  # really random across rows
    probs = torch.softmax(logits, -1)
    sorted_probs, order = probs.sort(-1, descending=True)
    picked_p = TopPSampler(p=0.5)(logits, slots, rows)
    rank = (order == picked_p.unsqueeze(1)).float().argmax(1)
    mass_before = (sorted_probs.cumsum(-1) - sorted_probs).gather(1, rank.unsqueeze(1)).squeeze(1)
    assert bool((mass_before < 0.5).all())


def test_cluster_sampler_stays_in_a_top_cluster():
    clusters = torch.arange(64) % 8
    tokenizer = type("T", (), {"codebook": torch.eye(64)[:, :8] + clusters[:, None] * 10.0})()
    sampler = ClusterSampler(top_k=2, temperature=1.0, temperature2=0.5, num_clusters=8,
                             image_tokenizer=tokenizer)
    assert sampler.clusters.unique().numel() == 8
    logits = torch.randn(500, 64, generator=torch.Generator().manual_seed(3)) * 2
    slots = torch.arange(500)
    picked = sampler(logits, slots, SlotNoise(0).rows(torch.zeros(500, dtype=torch.long), slots))
    labels = sampler.clusters
    mass = torch.zeros(500, 8).scatter_add_(1, labels.expand(500, -1), torch.softmax(logits, -1))
    top2 = mass.topk(2).indices
    assert bool((top2 == labels[picked].unsqueeze(1)).any(1).all())


def test_noise_is_uniform_and_depends_on_seed_stream_and_slot():
    slots = torch.arange(20000)
    zeros = torch.zeros_like(slots)
    u = SlotNoise(0).rows(zeros, slots).uniform(0)
    assert 0.49 < float(u.mean()) < 0.51 and float(u.min()) >= 0 and float(u.max()) < 1
    assert torch.histc(u.float(), 10, 0, 1).min() > 1800
    assert not torch.equal(u, SlotNoise(1).rows(zeros, slots).uniform(0))
    assert not torch.equal(u, SlotNoise(0).rows(zeros + 1, slots).uniform(0))
    assert not torch.equal(u, SlotNoise(0).rows(zeros, slots).uniform(1))
    assert torch.equal(u[5:9], SlotNoise(0).rows(zeros[5:9], slots[5:9]).uniform(0))


def test_sample_categorical_never_picks_masked_tokens():
    logits = torch.full((4, 10), float("-inf"))
    logits[:, 3] = 0.0
    u = torch.tensor([0.0, 0.5, 0.999999, 1 - 2 ** -53], dtype=torch.float64)
    assert sample_categorical(logits, u).tolist() == [3, 3, 3, 3]


def test_kmeans_and_cluster_files(tmp_path):
    book = torch.cat([torch.randn(20, 3) * 0.01 + c for c in (0.0, 5.0, 10.0)])
    labels = kmeans_clusters(book, 3, seed=0)
    assert torch.equal(labels, kmeans_clusters(book, 3, seed=0))
    assert sorted(labels.bincount().tolist()) == [20, 20, 20]
    path = tmp_path / "labels.npy"
    np.save(path, labels.numpy())
    assert torch.equal(load_clusters(path, vocab_size=60), labels)
    with pytest.raises(DataError, match="labels 60 token ids"):
        load_clusters(path, vocab_size=64)
    with pytest.raises(DataError, match="no cluster label file"):
        load_clusters(tmp_path / "missing.npy")
    with pytest.raises(ConfigError, match="needs clusters"):
        ClusterSampler()


def test_registry_builds_every_sampler_and_pixel_stage(tmp_path):
    regs = get_registries()
    np.save(tmp_path / "c.npy", np.arange(256) % 4)
    for node in ({"name": "greedy"}, {"name": "temperature", "temperature": 0.9}, {"name": "top_k", "k": 3},
                 {"name": "top_p", "p": 0.9}, {"name": "cluster", "clusters": str(tmp_path / "c.npy")}):
        spec = regs.get("token_sampler", node["name"])
        runtime = {"image_tokenizer": None} if "image_tokenizer" in spec.runtime_kwargs else {}
        assert callable(regs.build("token_sampler", node, **runtime))
    with pytest.raises(ConfigError):
        regs.build("token_sampler", {"name": "temperature", "temperature": 0})
    assert regs.get("stage", "repeat").obj.space == "pixels"
    assert regs.get("stage", "interpolation").obj.space == "tokens"
    blend = regs.build("stage", {"name": "linear_blend", "rounds": 2}, context=None, fps=1.0)
    assert blend.output_fps == 4.0 and blend.models == ()
    with pytest.raises(ConfigError, match="comes first"):
        regs.build("stage", {"name": "repeat"}, context=None, fps=None)


# ------------------------------------------------------------------------------ pixel baselines
def test_pixel_baselines_keep_given_frames_and_blend():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (5, 4, 6, 3), dtype=torch.uint8, generator=g)
    for fn in (repeat_frames, blend_frames):
        out = fn(frames, 3)
        assert out.shape == (33, 4, 6, 3) and out.dtype == torch.uint8
        assert torch.equal(out[0::8], frames)
    once = blend_frames(frames, 1)
    expected = ((frames[:-1].int() + frames[1:].int() + 1) // 2).to(torch.uint8)
    assert torch.equal(once[1::2], expected)
    assert torch.equal(repeat_frames(frames.unsqueeze(0), 1)[0, 1::2], frames[:-1])


def test_split_and_merge_windows_round_trip():
    frames = torch.arange(9).view(1, 9)
    windows = split_windows(frames, 3)
    assert windows.tolist() == [[[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8]]]
    assert torch.equal(merge_windows(windows), frames)
