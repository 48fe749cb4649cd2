"""Audio front ends (fbank, SpeechBrain fbank, DeepSpectrum images, windows) and ECAPA-TDNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from extract.errors import ConfigError
from extract.models.checkpoints import CheckpointError, count_parameters, save_safetensors
from extract.models.ecapa import (
    VOXCELEB_ECAPA,
    VOXCELEB_ECAPA_PARAMS,
    Conv1d,
    EcapaEmbedder,
    EcapaTdnn,
)
from extract.models.fbank import (
    SpeechBrainFbank,
    frame_times,
    log_mel_fbank,
    mel_band_centers,
    mel_filter_bank,
    sentence_mean_norm,
    speechbrain_filter_bank,
)
from extract.models.spectrogram_image import (
    colormap_lut,
    deepspectrum_n_fft,
    mel_power_spectrogram,
    spectrogram_images,
    windows,
)

SR = 16000
TINY = {
    "input_size": 80,
    "channels": (16, 16, 16, 16, 48),
    "kernel_sizes": (5, 3, 3, 3, 1),
    "dilations": (1, 2, 3, 4, 1),
    "attention_channels": 8,
    "lin_neurons": 12,
    "se_channels": 8,
}
SPEECHBRAIN_KEYS = (
    "blocks.0.conv.conv.weight",
    "blocks.0.norm.norm.weight",
    "blocks.0.norm.norm.running_var",
    "blocks.1.tdnn1.conv.conv.weight",
    "blocks.1.res2net_block.blocks.0.conv.conv.weight",
    "blocks.1.res2net_block.blocks.6.norm.norm.bias",
    "blocks.1.tdnn2.norm.norm.weight",
    "blocks.1.se_block.conv1.conv.weight",
    "blocks.3.se_block.conv2.conv.bias",
    "mfa.conv.conv.weight",
    "asp.tdnn.conv.conv.weight",
    "asp.tdnn.norm.norm.weight",
    "asp.conv.conv.weight",
    "asp_bn.norm.weight",
    "fc.conv.weight",
    "fc.conv.bias",
)


def tone(freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    """A sine of ``freq`` Hz at 16 kHz, float32."""
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noisy(seed: int = 0, seconds: float = 1.0) -> np.ndarray:
    """A tone sweep plus noise, float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    sweep = np.sin(2 * np.pi * (200 + 300 * t) * t) * np.linspace(0.2, 1.0, n)
    return (0.5 * sweep + 0.05 * rng.standard_normal(n)).astype(np.float32)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
    return model.eval()


# --------------------------------------------------------------------------- ECAPA


@pytest.fixture(scope="module")
def full_ecapa() -> EcapaTdnn:
    return EcapaTdnn(**VOXCELEB_ECAPA)


def test_full_ecapa_parameter_count(full_ecapa: EcapaTdnn) -> None:
    n = count_parameters(full_ecapa)
    assert n == VOXCELEB_ECAPA_PARAMS == 20_767_552
    # by hand: TDNN 80->1024 k5; 3 SE-Res2Net blocks; MFA 3072->3072; ASP; BN; FC 6144->192
    c, a = 1024, 128
    tdnn0 = 80 * c * 5 + c + 2 * c
    res2 = 7 * (128 * 128 * 3 + 128 + 2 * 128)
    se = (c * 128 + 128) + (128 * c + c)
    block = 2 * (c * c + c + 2 * c) + res2 + se
    mfa = 3 * c * 3 * c + 3 * c + 2 * 3 * c
    asp = (9 * c * a + a + 2 * a) + (a * 3 * c + 3 * c)
    head = 2 * 6 * c + (6 * c * 192 + 192)
    assert n == tdnn0 + 3 * block + mfa + asp + head
    assert abs(n - 20.8e6) / 20.8e6 < 0.01  # SpeechBrain's published model: ~20.8M


def test_full_ecapa_has_speechbrain_keys(full_ecapa: EcapaTdnn) -> None:
    state = full_ecapa.state_dict()
    assert set(SPEECHBRAIN_KEYS) <= set(state)
    assert len(state) == 231
    assert not any(".shortcut." in k for k in state)  # 1024 -> 1024: no projection
    assert "blocks.1.res2net_block.blocks.7.conv.conv.weight" not in state  # scale 8 -> 7
    shapes = {
        "blocks.0.conv.conv.weight": (1024, 80, 5),
        "blocks.2.res2net_block.blocks.3.conv.conv.weight": (128, 128, 3),
        "blocks.3.se_block.conv1.conv.weight": (128, 1024, 1),
        "mfa.conv.conv.weight": (3072, 3072, 1),
        "asp.tdnn.conv.conv.weight": (128, 9216, 1),
        "asp.conv.conv.weight": (3072, 128, 1),
        "asp_bn.norm.running_mean": (6144,),
        "fc.conv.weight": (192, 6144, 1),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key


def test_conv_reflect_same_padding() -> None:
    conv = Conv1d(3, 4, kernel_size=3, dilation=4)
    ref = nn.Conv1d(3, 4, 3, dilation=4, padding=4, padding_mode="reflect")
    ref.load_state_dict(conv.conv.state_dict())
    x = torch.randn(2, 3, 11)
    assert torch.allclose(conv(x), ref(x), atol=1e-6)
    assert conv(x).shape == (2, 4, 11)


def test_tiny_ecapa_checkpoint_roundtrip(tmp_path) -> None:
    embedder = EcapaEmbedder(randomize(EcapaTdnn(**TINY))).eval()
    wav = np.stack([noisy(1), noisy(2)])
    expected = embedder.embed(wav)
    assert expected.shape == (2, 12) and expected.dtype == np.float32
    assert np.isfinite(expected).all() and not np.allclose(expected[0], expected[1])

    ckpt = tmp_path / "embedding_model.ckpt"
    torch.save(embedder.model.state_dict(), ckpt)  # SpeechBrain's format: a plain state dict
    st = save_safetensors(embedder.model, tmp_path / "embedding_model.safetensors")
    for path in (ckpt, st):
        loaded = EcapaEmbedder.from_checkpoint(path, **TINY)
        assert not loaded.training
        np.testing.assert_array_equal(loaded.embed(wav), expected)


def test_wrong_checkpoint_lists_keys(tmp_path) -> None:
    state = EcapaTdnn(**TINY).state_dict()
    del state["asp.conv.conv.weight"]
    state["fc.conv.conv.weight"] = torch.zeros(1)
    path = tmp_path / "bad.ckpt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        EcapaEmbedder.from_checkpoint(path, **TINY)
    assert "asp.conv.conv.weight" in str(err.value)
    assert "fc.conv.conv.weight" in str(err.value)
    assert str(path) in str(err.value)

    good = tmp_path / "tiny.ckpt"
    torch.save(EcapaTdnn(**TINY).state_dict(), good)
    with pytest.raises(CheckpointError, match=r"fc\.conv\.weight"):
        EcapaEmbedder.from_checkpoint(good, **{**TINY, "lin_neurons": 7})
    with pytest.raises(ConfigError, match="n_channels"):
        EcapaEmbedder.from_checkpoint(good, **{**TINY, "n_channels": 7})


def test_ecapa_batch_matches_single_and_lengths() -> None:
    model = randomize(EcapaTdnn(**TINY), seed=3)
    feats = torch.randn(3, 60, 80)
    with torch.no_grad():
        batch = model(feats)
        single = torch.cat([model(feats[i : i + 1]) for i in range(3)])
        ones = model(feats, torch.ones(3))
        half = model(feats, torch.tensor([1.0, 0.5, 1.0]))
    assert batch.shape == (3, 12)
    assert torch.allclose(batch, single, atol=1e-5)
    assert torch.allclose(batch, ones, atol=1e-6)
    assert not torch.allclose(half[1], batch[1], atol=1e-4)
    assert torch.allclose(half[[0, 2]], batch[[0, 2]], atol=1e-5)


def test_ecapa_bad_input() -> None:
    model = EcapaTdnn(**TINY).eval()
    with pytest.raises(ValueError, match="80"):
        model(torch.randn(1, 50, 40))
    with pytest.raises(ValueError, match="frames"):
        model(torch.randn(1, 4, 80))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 50, 80), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="8000"):
        EcapaEmbedder(EcapaTdnn(**TINY)).embed(np.zeros((1, 8000), np.float32), sample_rate=8000)


# --------------------------------------------------------------------------- project fbank


def test_log_mel_fbank_shape_and_times() -> None:
    wav = noisy(seconds=1.0)
    feats = log_mel_fbank(wav)
    assert feats.shape == (98, 80) and feats.dtype == np.float32  # 1 + (16000 - 400) // 160
    times = frame_times(len(feats))
    assert times[0] == pytest.approx(0.0125) and times[-1] == pytest.approx(0.9825)
    assert np.allclose(np.diff(times), 0.01)
    assert log_mel_fbank(wav[:399]).shape == (0, 80)
    silence = log_mel_fbank(np.zeros(800, np.float32))
    assert np.allclose(silence, np.log(1e-10))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_log_mel_fbank_tone_band(freq: float) -> None:
    feats = log_mel_fbank(tone(freq))
    expected = int(np.argmin(np.abs(mel_band_centers(80, SR, f_min=20.0) - freq)))
    assert abs(int(feats.mean(axis=0).argmax()) - expected) <= 1


def test_log_mel_fbank_batch_torch_numpy() -> None:
    wavs = np.stack([noisy(4), noisy(5)])
    batch = log_mel_fbank(torch.from_numpy(wavs))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 98, 80)
    for i in range(2):
        np.testing.assert_allclose(log_mel_fbank(wavs[i]), batch[i].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        log_mel_fbank(np.zeros((1, 2, 400), np.float32))


def test_mel_filter_bank_matches_transformers() -> None:
    audio_utils = pytest.importorskip("transformers.audio_utils")
    ours = mel_filter_bank(512, 80, SR, 20.0, None, "htk")
    theirs = audio_utils.mel_filter_bank(257, 80, 20.0, 8000.0, SR, norm=None, mel_scale="htk")
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    ours = mel_filter_bank(512, 128, SR, 0.0, None, "slaney", "slaney")
    theirs = audio_utils.mel_filter_bank(
        257, 128, 0.0, 8000.0, SR, norm="slaney", mel_scale="slaney"
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-10)


# --------------------------------------------------------------------------- SpeechBrain fbank


def test_speechbrain_filter_bank_shape() -> None:
    fb = speechbrain_filter_bank()
    assert fb.shape == (201, 80) and fb.dtype == torch.float32
    assert float(fb.max()) <= 1.0 and float(fb.min()) == 0.0
    peaks = fb.argmax(dim=0)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # centres rise with the band index


def test_speechbrain_fbank_shapes_norm_and_tone() -> None:
    fbank = SpeechBrainFbank()
    wav = torch.from_numpy(np.stack([tone(1000.0), noisy(6)]))
    raw = fbank.log_fbank(wav)
    assert raw.shape == (2, 101, 80)  # center=True: 1 + 16000 // 160
    assert fbank.frame_times(3).tolist() == [0.0, 0.01, 0.02]
    span = raw.amax(dim=(1, 2)) - raw.amin(dim=(1, 2))
    assert bool((span <= 80.0 + 1e-4).all())  # top_db
    centres = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 82) / 2595) - 1)
    assert int(raw[0].mean(dim=0).argmax()) == int(np.argmin(np.abs(centres[1:-1] - 1000.0)))

    feats = fbank(wav)
    assert torch.allclose(feats.mean(dim=1), torch.zeros(2, 80), atol=1e-3)
    single = torch.cat([fbank(wav[i : i + 1]) for i in range(2)])
    assert torch.allclose(feats, single, atol=1e-4)


def test_sentence_mean_norm_uses_relative_lengths() -> None:
    feats = torch.randn(2, 10, 3) + 5.0
    out = sentence_mean_norm(feats, torch.tensor([1.0, 0.5]))
    assert torch.allclose(out[0].mean(dim=0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out[1, :5].mean(dim=0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out[1] - feats[1], (out[1] - feats[1])[:1].expand(10, 3))
    with pytest.raises(ValueError, match="lengths"):
        sentence_mean_norm(feats, torch.tensor([1.0, 1.5]))


def test_sentence_mean_norm_counts_frames_as_current_speechbrain() -> None:
    """Current SpeechBrain (make_padding_mask): frame j counts iff j < L * T - 1e-6; releases
    up to 1.0.3 counted round(L * T). They differ for fractional parts below one half."""
    t = 10
    feats = torch.randn(4, t, 3, generator=torch.Generator().manual_seed(0)) + 3.0
    lengths = torch.tensor([1.0, 0.5, 0.43, 0.77])  # 10, 5, 4.3 and 7.7 frames
    out = sentence_mean_norm(feats, lengths)
    for i, frames in enumerate([10, 5, 5, 8]):  # ceil(L * T - 1e-6)
        # the reference, written out: mask = arange(T) < L * T - eps; mean over the mask
        mask = torch.arange(t) < (lengths[i] * t - 1e-6)
        assert int(mask.sum()) == frames
        mean = (feats[i] * mask[:, None]).sum(0) / mask.sum()
        torch.testing.assert_close(out[i], feats[i] - mean)
    old_rule = feats[2] - feats[2, :4].mean(0)  # round(4.3) = 4 frames (SpeechBrain <= 1.0.3)
    assert (out[2] - old_rule).abs().max() > 1e-3


# --------------------------------------------------------------------------- windows


def test_windows_centred_padding() -> None:
    wav = np.arange(1, SR + 1, dtype=np.float32)  # sample i holds i + 1
    wins, times = windows(wav, SR, win_s=0.1, centers=[0.0, 0.5, 1.0, 3.0])
    assert wins.shape == (4, 1600) and wins.dtype == np.float32
    np.testing.assert_allclose(times, [0.0, 0.5, 1.0, 3.0])
    assert (wins[0, :800] == 0).all() and wins[0, 800] == 1 and wins[0, -1] == 800
    np.testing.assert_array_equal(wins[1], np.arange(7201, 8801))
    assert wins[2, 799] == SR and (wins[2, 800:] == 0).all()
    assert (wins[3] == 0).all()

    twins, ttimes = windows(torch.from_numpy(wav), SR, win_s=0.1, centers=[0.0, 0.5, 1.0, 3.0])
    assert isinstance(twins, torch.Tensor)
    np.testing.assert_array_equal(twins.numpy(), wins)
    np.testing.assert_array_equal(ttimes, times)


def test_windows_every_hop_covers_signal() -> None:
    wav = np.ones(int(2.3 * SR), np.float32)
    wins, times = windows(wav, SR, win_s=1.5, hop_s=0.5)
    assert wins.shape == (3, 24000)  # starts 0, 0.5, 1.0 s; the last padded past 2.3 s
    np.testing.assert_allclose(times, [0.75, 1.25, 1.75])
    assert wins[:2].all() and wins[2, : int(1.3 * SR)].all() and not wins[2, -1]
    assert windows(wav[:100], SR, 1.5, 0.5)[0].shape == (1, 24000)
    assert windows(wav[:0], SR, 1.5, 0.5)[0].shape == (0, 24000)
    with pytest.raises(ValueError, match="hop_s"):
        windows(wav, SR, 1.0)


# --------------------------------------------------------------------------- DeepSpectrum images


def test_spectrogram_image_shape_and_colours() -> None:
    assert deepspectrum_n_fft(SR) == 512
    lut = colormap_lut("viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[0].tolist() == [68, 1, 84]  # viridis' dark purple

    images = spectrogram_images(np.stack([noisy(7), np.zeros(SR, np.float32)]))
    assert images.shape == (2, 227, 227, 3) and images.dtype == np.uint8  # DeepSpectrum's size
    assert (images[1] == lut[0]).all()  # silence: a flat image of the lowest colour
    colours = images[0].reshape(-1, 3)
    assert np.isin(colours.view([("", np.uint8)] * 3), lut.view([("", np.uint8)] * 3)).all()


def test_spectrogram_image_frequency_axis_points_up() -> None:
    wav = tone(500.0)
    power = mel_power_spectrogram(wav)
    assert power.shape == (1, 128, 61)  # 1 + (16000 - 512) // 256 frames
    band = int(power[0].mean(dim=1).argmax())
    image = spectrogram_images(wav, size=224, freq_axis="mel")  # equal band heights
    hottest = np.where((image == colormap_lut()[255]).all(axis=-1).any(axis=1))[0]
    rows = np.arange(224)
    band_rows = rows[127 - np.floor((rows + 0.5) * 128 / 224).astype(int) == band]
    assert len(hottest) and set(hottest) <= set(band_rows)
    assert band_rows.min() > 112  # a low tone sits in the lower half
    # librosa's symlog axis gives 0-1 kHz 40 % of the height at 16 kHz: the tone sits higher
    symlog = spectrogram_images(wav)
    hot = np.where((symlog == colormap_lut()[255]).all(axis=-1).any(axis=1))[0]
    assert len(hot) and hot.min() > 227 * 0.6 and hot.max() < 227 - 1


def test_spectrogram_image_level() -> None:
    wav = noisy(8)
    quiet, loud = wav, 4.0 * wav
    relative = spectrogram_images(np.stack([quiet, loud]))
    # DeepSpectrum ignores level (a power-of-two gain keeps the float arithmetic exact)
    np.testing.assert_array_equal(relative[0], relative[1])
    absolute = spectrogram_images(np.stack([quiet, loud]), db_limits=(-60.0, 40.0))
    assert (absolute[0] != absolute[1]).any(axis=-1).mean() > 0.5


def test_spectrogram_image_batch_matches_single() -> None:
    wins = torch.from_numpy(np.stack([noisy(9), noisy(10), tone(2000.0)]))
    batch = spectrogram_images(wins)
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8
    for i in range(3):
        assert torch.equal(spectrogram_images(wins[i]), batch[i])
    with pytest.raises(ValueError, match="n_fft"):
        spectrogram_images(np.zeros((1, 300), np.float32))
