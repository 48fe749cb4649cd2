"""Encoders and segment plans: LSTM state carry equals whole-sequence processing; transformer
windows are averaged; stream plans keep each video's segments consecutive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fuse.config import EncoderConfig, ModelConfig, TaskConfig
from fuse.data.batches import Batcher, Planner, streams, windows
from fuse.data.dataset import FrameTiming, VideoRequest, load_fused
from fuse.data.features import FeatureSources, feature_specs
from fuse.data.grid import GridSpec
from fuse.model.encoders import ENCODERS, build_encoder
from fuse.model.net import FusionNet, ModelSpec
from fuse.synthetic import va_set
from fuse.tasks import build_task
from fuse.training.inference import predict_videos


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_rnn_state_carry_equals_whole_sequence(name):
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(name=name, hidden=16, layers=2, dropout=0.0), 5).eval()
    x = torch.randn(2, 350, 5)
    no_pad = torch.zeros(2, 350, dtype=torch.bool)
    whole, _ = enc(x, no_pad)
    state, parts = None, []
    for start in range(0, 350, 100):  # segments of 100, the last one 50
        seg = x[:, start : start + 100]
        out, state = enc(seg, torch.zeros(seg.shape[:2], dtype=torch.bool), state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=1e-5)


def test_padded_rows_do_not_change_outputs_or_state():
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(name="lstm", hidden=8, dropout=0.0), 3).eval()
    x = torch.randn(1, 7, 3)
    ref, (h_ref, _) = enc(x[:, :4], torch.zeros(1, 4, dtype=torch.bool))
    pad = torch.tensor([[False] * 4 + [True] * 3])
    out, (h, _) = enc(x, pad)
    torch.testing.assert_close(out[:, :4], ref)
    torch.testing.assert_close(h, h_ref)


def test_every_encoder_builds_and_keeps_the_time_axis():
    x, pad = torch.randn(2, 9, 6), torch.zeros(2, 9, dtype=torch.bool)
    for name in ENCODERS:
        cfg = EncoderConfig(name=name, hidden=8, heads=2, ff_dim=16, carry_state=False)
        out, _ = build_encoder(cfg, 6)(x, pad)
        assert out.shape[:2] == (2, 9)


def test_stream_plan_keeps_videos_consecutive():
    lengths = np.array([250, 90, 310, 10])
    steps, reset = streams(lengths, np.arange(4), n_streams=2, seg_len=100)
    for lane in range(2):
        seen = [tuple(s) for s in steps[:, lane] if s[0] >= 0]
        for v in {s[0] for s in seen}:
            starts = [s[1] for s in seen if s[0] == v]
            assert starts == list(range(0, lengths[v], 100))  # in order, no overlap
        first = [t for t, s in enumerate(steps[:, lane]) if s[0] >= 0 and s[1] == 0]
        assert all(reset[t, lane] for t in first)
    assert sum(int(s[2]) for s in steps.reshape(-1, 3) if s[0] >= 0) == lengths.sum()


def test_windows_cover_every_frame_and_end_at_the_video_end():
    segs = windows(np.array([250, 60]), np.arange(2), seg_len=100, stride=70)
    assert segs.tolist() == [[0, 0, 100], [0, 70, 100], [0, 140, 100], [0, 150, 100],
                             [1, 0, 60]]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    s = va_set(tmp_path_factory.mktemp("va"), videos=4, seconds=7.0, seed=1)
    specs = feature_specs(["vis"], ["aud:mean"], "nearest")
    sources = FeatureSources([str(s.store)], ["vis", "aud"])
    from fuse.config import LabelConfig
    from fuse.labels import get_adapter

    labels = get_adapter("affwild2-va").load(LabelConfig(path=str(s.labels)))
    reqs = [VideoRequest(v, "val", lab) for v, lab in sorted(labels.videos.items())]
    data, _ = load_fused(sources, specs, reqs, level="frame", grid=GridSpec("labels"),
                         fill="nearest", timing=FrameTiming("vis"))
    return data


def _model(data, encoder: EncoderConfig) -> FusionNet:
    torch.manual_seed(0)
    spec = ModelSpec(data.features, data.dims, True, 2, "frame")
    cfg = ModelConfig(fusion_dim=12, dropout=0.0, head=[8], encoder=encoder)
    return FusionNet(spec, cfg).eval()


def test_pipeline_predictions_with_carried_state_equal_whole_videos(small_data):
    model = _model(small_data, EncoderConfig(name="lstm", hidden=10, dropout=0.0))
    task = build_task(TaskConfig(name="va"), ["valence", "arousal"])
    batcher = Batcher(small_data, torch.device("cpu"), False)
    videos = np.arange(len(small_data.videos))
    segmented = predict_videos(model, task, batcher, Planner(
        small_data, seg_len=37, stride=0, batch_size=3, carry=True), videos)
    whole = predict_videos(model, task, batcher, Planner(
        small_data, seg_len=10_000, stride=0, batch_size=1, carry=True), videos)
    for a, b in zip(segmented, whole, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("encoder", [
    EncoderConfig(name="transformer", hidden=8, heads=2, ff_dim=16, dropout=0.0),
    EncoderConfig(name="gru", hidden=8, bidirectional=True, carry_state=False, dropout=0.0)])
def test_overlapping_windows_are_averaged(small_data, encoder):
    model = _model(small_data, encoder)
    task = build_task(TaskConfig(name="va"), ["valence", "arousal"])
    batcher = Batcher(small_data, torch.device("cpu"), False)
    planner = Planner(small_data, seg_len=80, stride=30, batch_size=4, carry=False)
    got = predict_videos(model, task, batcher, planner, np.array([0]))[0]
    n = int(small_data.lengths[0])
    total, count = np.zeros((n, 2)), np.zeros(n)
    for v, start, length in windows(small_data.lengths, np.array([0]), 80, 30):
        rows = slice(small_data.offsets[v] + start, small_data.offsets[v] + start + length)
        x = torch.from_numpy(small_data.x[rows]).float()[None]
        valid = torch.from_numpy(small_data.valid[rows]).float()[None]
        with torch.no_grad():
            out, _ = model(x, valid, torch.zeros(1, length, dtype=torch.bool))
        total[start : start + length] += out[0].numpy()
        count[start : start + length] += 1
    np.testing.assert_allclose(got, total / count[:, None], atol=1e-5)
