"""DeepSpectrum as DeepSpectrum computes it: librosa's symlog mel axis, drawn at 227 px and resized
to 224 with PIL, the file's own sample rate with the FFT sized from it, short last windows
stretched rather than zero-padded.

The reference pictures are computed here from the same mel matrix: once with the symlog axis
written out from matplotlib's formula, once by matplotlib itself (``pcolormesh`` on a symlog
axis, saved at dpi 227, as ``librosa.display.specshow`` draws for DeepSpectrum).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from media_utils import write_audio

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.base import create
from extract.extractors.deepspectrum import padded_segments, shortened_segments
from extract.models.densenet import DenseNet
from extract.models.fbank import hz_to_mel, mel_to_hz
from extract.models.spectrogram_image import (
    colormap_lut,
    deepspectrum_n_fft,
    mel_power_spectrogram,
    resize_images,
    spectrogram_images,
)

MAX_MEAN_DIFF = 1.0 / 255.0


def voice(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a moving pitch plus a little noise (energy across the mel range)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 180.0 + 60.0 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wav = sum(np.sin(k * phase) / k for k in range(1, 12)) * 0.2
    return (wav + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def levels_of(wav: np.ndarray, rate: int) -> np.ndarray:
    """The mel matrix as colour levels in [0, 1] (dB re the peak, per-window autoscale)."""
    power = mel_power_spectrogram(wav, rate)[0].numpy().astype(np.float64)
    db = 10 * np.log10(np.maximum(power, 1e-10) / power.max())
    return (db - db.min()) / (db.max() - db.min())


def specshow_edges(n_mels: int, fmax: float) -> np.ndarray:
    """librosa 0.7 ``__coord_mel_hz``: band edges between mel_frequencies(n) centres."""
    centres = mel_to_hz(np.linspace(0.0, hz_to_mel(fmax, "slaney"), n_mels), "slaney")
    edges = np.asarray(centres, dtype=float).copy()
    edges[1:] -= 0.5 * np.diff(edges)
    return np.append(np.maximum(0.0, edges), [fmax])


def reference_formula(levels: np.ndarray, rate: int, size: int = 227) -> np.ndarray:
    """Pixel centre -> frequency through the inverse symlog (base 2, linthresh 1 kHz,
    linscale 1), -> band; time columns split evenly; viridis entry floor(256 * level)."""
    n_mels, n_frames = levels.shape
    fmax = rate / 2.0

    def inverse_symlog(y: np.ndarray) -> np.ndarray:  # y = 2 f below 1 kHz
        return np.where(y <= 2000.0, y / 2.0, 1000.0 * 2.0 ** (y / 1000.0 - 2.0))

    top = 1000.0 * (2.0 + np.log2(fmax / 1000.0))
    centre_y = (size - np.arange(size) - 0.5) / size * top  # row 0 is the top
    band = np.searchsorted(specshow_edges(n_mels, fmax), inverse_symlog(centre_y)) - 1
    frame = np.floor((np.arange(size) + 0.5) / size * n_frames).astype(int)
    idx = np.clip(np.floor(levels[np.clip(band, 0, n_mels - 1)][:, frame] * 256), 0, 255)
    viridis = __import__("matplotlib").colormaps["viridis"](np.arange(256))[:, :3]
    return np.round(viridis[idx.astype(int)] * 255).astype(np.uint8)


def reference_matplotlib(levels: np.ndarray, rate: int, size: int = 227) -> np.ndarray:
    """What DeepSpectrum's plot_chunk draws: specshow(y_axis='mel') in a 1x1 inch figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n_mels, n_frames = levels.shape
    fig = plt.figure(frameon=False)
    fig.set_size_inches(1, 1)
    ax = plt.Axes(fig, [0.0, 0.0, 1.0, 1.0])
    ax.set_axis_off()
    fig.add_axes(ax)
    y = specshow_edges(n_mels, rate / 2.0)
    x = np.arange(n_frames + 1, dtype=float)
    ax.pcolormesh(x, y, levels, cmap="viridis", shading="flat", edgecolors="None",
                  rasterized=True)
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    ax.set_yscale("symlog", base=2, linthresh=1000.0)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=size)
    plt.close(fig)
    buf.seek(0)
    return np.asarray(Image.open(buf))[:, :, :3]


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_pictures_match_the_symlog_reference(rate: int) -> None:
    wav = voice(1.0, rate)
    picture = spectrogram_images(wav, rate)
    assert picture.shape == (227, 227, 3)
    levels = levels_of(wav, rate)
    assert mean_diff(picture, reference_formula(levels, rate)) < MAX_MEAN_DIFF
    assert mean_diff(picture, reference_matplotlib(levels, rate)) < MAX_MEAN_DIFF
    # the project's earlier equal-band picture is far from DeepSpectrum's
    equal = spectrogram_images(wav, rate, freq_axis="mel")
    assert mean_diff(equal, reference_formula(levels, rate)) > 10 * MAX_MEAN_DIFF


def test_low_kilohertz_fills_forty_percent_at_16k() -> None:
    from extract.models.spectrogram_image import specshow_mel_edges, symlog_rows

    rows = symlog_rows(128, 16000, 227)
    edges = specshow_mel_edges(128, 8000.0)
    below = (edges[rows + 1] <= 1000.0).mean()  # rows whose band ends below 1 kHz
    assert 0.38 < below <= 0.40
    assert rows[0] == 127 and rows[-1] == 0  # high bands at the top


def test_network_input_is_pil_resized_227_to_224(tmp_path: Path) -> None:
    from PIL import Image

    picture = spectrogram_images(voice(1.0, 16000), 16000)
    resized = resize_images(picture[None], 224)[0]
    pil = np.array(Image.fromarray(picture).resize((224, 224)))  # Pillow's default filter
    np.testing.assert_array_equal(resized, pil)
    nearest = resize_images(picture[None], 224, "nearest")[0]
    assert (nearest != resized).any()
    with pytest.raises(ConfigError, match="resize filter"):
        resize_images(picture[None], 224, "cubic")

    model = _tiny_densenet(tmp_path)[1]
    ex = create(_spec(model[0], model[1], sample_rate=16000))
    ex.load()
    x = ex.images(torch.from_numpy(voice(1.0, 16000)[None]))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    ref = (torch.from_numpy(pil).permute(2, 0, 1)[None].float() / 255 - mean) / std
    torch.testing.assert_close(x, ref)


def _tiny_densenet(tmp_path: Path) -> tuple[DenseNet, tuple[Path, int]]:
    torch.manual_seed(0)
    model = DenseNet(growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16,
                     num_classes=4).eval()
    path = tmp_path / "densenet_tiny.pth"
    torch.save(model.state_dict(), path)
    return model, (path, model.embedding_dim)


def _spec(weights: Path, dim: int, sample_rate: int | str = "native", **options) -> FeatureSpec:
    return FeatureSpec("ds", "audio", "deepspectrum", dim, str(weights), rate=10,
                       input={"sample_rate": sample_rate, "window": 1.0, "hop": 0.1},
                       options=options)


def test_windows_shorten_at_the_tail_like_deepspectrum() -> None:
    rate, n = 16000, int(2.35 * 16000)
    seg = shortened_segments(n, rate, 1.0, 0.1, n_fft=512)
    # DeepSpectrum: chunks n * hop for n < S // hop (23), cut at the end, < n_fft dropped
    assert len(seg.starts) == 23
    np.testing.assert_array_equal(seg.starts, np.arange(23) * 1600)
    np.testing.assert_array_equal(seg.stops, np.minimum(seg.starts + 16000, n))
    assert seg.stops[-1] - seg.starts[-1] == n - 22 * 1600  # the last: 0.15 s, not padded
    np.testing.assert_allclose(seg.times, (seg.starts + seg.stops) / 2 / rate)
    tiny = shortened_segments(n, rate, 1.0, 0.1, n_fft=3000)
    assert (tiny.stops - tiny.starts).min() >= 3000 and len(tiny.starts) == 22
    padded = padded_segments(n, rate, 1.0, 0.1)
    assert len(padded.starts) == 15 and padded.pad_to == 16000  # covers the signal, padded
    # centred windows are cut to the signal; too short or outside → masked
    c = shortened_segments(n, rate, 1.0, 0.1, 512, centers=np.array([0.0, 1.0, 2.34, 2.5]))
    np.testing.assert_array_equal(c.starts[:3], [0, 8000, n - 8160])
    np.testing.assert_array_equal(c.stops[:3], [8000, 24000, n])
    np.testing.assert_array_equal(c.mask, [True, True, True, False])  # 2.5 s lies outside
    long_fft = shortened_segments(n, rate, 1.0, 0.1, 9000, centers=np.array([0.0, 1.0, 2.34]))
    np.testing.assert_array_equal(long_fft.mask, [False, True, False])  # 8000, 8160 < 9000


def test_extractor_native_rate_tail_and_options(tmp_path: Path) -> None:
    model, (path, dim) = _tiny_densenet(tmp_path)
    rate = 44100
    wav = voice(1.25, rate)
    ex = create(_spec(path, dim))
    ex.load()
    assert ex.input_rate is None
    with pytest.raises(ValueError, match="native.*pass sample_rate"):
        ex.extract(wav)
    rows = ex.extract_at(wav, rate)
    assert deepspectrum_n_fft(rate) == 2048
    # 12 chunks; the last three are 0.25, 0.15, 0.05 s: the 0.05 s one (2205 samples) is
    # longer than n_fft 2048 and kept, nothing is zero-padded
    assert rows.values[""].shape == (12, dim) and rows.mask is None
    last = wav[11 * 4410:]
    with torch.inference_mode():
        picture = resize_images(spectrogram_images(last[None], rate), 224)
        x = (torch.from_numpy(picture).permute(0, 3, 1, 2).float() / 255
             - torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)) \
            / torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        ref = model.forward_features(x).numpy()
    np.testing.assert_allclose(rows.values[""][-1], ref[0], atol=1e-5)
    np.testing.assert_allclose(rows.times[-1], (11 * 4410 + len(wav)) / 2 / rate)
    # a fixed rate refuses other rates; tail: pad keeps one fewer row per covered hop
    fixed = create(_spec(path, dim, sample_rate=rate, tail="pad"))
    with pytest.raises(ValueError, match="needs audio at 44100 Hz"):
        fixed.extract_at(wav, 16000)
    assert len(fixed.extract_at(wav, rate).times) == 4
    problems = [({"freq_axis": "log"}, "freq_axis"), ({"tail": "zero"}, "tail"),
                ({"plot_size": 0}, "plot_size"), ({"resize": "cubic"}, "resize")]
    for options, word in problems:
        with pytest.raises(ConfigError, match=word):
            create(_spec(path, dim, **options))
    with pytest.raises(ConfigError, match="sample_rate"):
        create(_spec(path, dim, sample_rate="44.1k"))


def test_run_reads_the_native_rate(tmp_path: Path) -> None:
    from extract.media.audio import read_audio
    from extract.runner import RunOptions, run
    from extract.store import open_store

    model, (path, dim) = _tiny_densenet(tmp_path)
    clip = write_audio(tmp_path / "in" / "clip.wav", seconds=1.3, rate=22050, channels=1)
    assert read_audio(clip, None).sample_rate == 22050
    catalog = tmp_path / "features.yaml"
    catalog.write_text(f"""features:
  ds:
    modality: audio
    extractor: deepspectrum
    dim: {dim}
    weights: {path}
    input: {{sample_rate: native, window: 1.0, hop: 0.1}}
    rate: 10
""")
    summary = run(RunOptions(features=["ds"], input=clip.parent, store=str(tmp_path / "s.zarr"),
                             workers=0, catalog=catalog, progress=False))
    assert summary.exit_code == 0, summary.failures
    stored = open_store(str(tmp_path / "s.zarr")).read_video("ds", "clip")
    ex = create(_spec(path, dim))
    ex.load()
    audio = read_audio(clip, None)
    ref = ex.extract_at(audio.wav, audio.sample_rate)
    assert len(stored.data) == len(ref.times) == 13
    np.testing.assert_allclose(stored.data, ref.values[""], rtol=2e-3, atol=2e-3)  # float16
    np.testing.assert_allclose(stored.timestamps, ref.times + audio.start, atol=1e-6)
    assert colormap_lut()[0].tolist() == [68, 1, 84]
