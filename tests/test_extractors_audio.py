"""Audio backbone extractors (hf_speech, ecapa, deepspectrum) on tiny configs of the real
architectures, saved in the formats users have and loaded through the extractors by path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from extract.catalog import FeatureSpec  # noqa: E402
from extract.errors import ConfigError  # noqa: E402
from extract.extractors.audio_windows import plan_windows  # noqa: E402
from extract.extractors.base import EXTRACTORS, create  # noqa: E402
from extract.extractors.speech import FrameGeometry, plan_chunks  # noqa: E402

SR = 16000
HF_KINDS = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
}
# the published front end (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2: 320x, 20 ms frames)
# with 8 channels; a 32-wide, 2-layer, 2-head transformer
TINY_SPEECH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, conv_dim=(8,) * 7, num_conv_pos_embeddings=16,
                   num_conv_pos_embedding_groups=2)
TINY_ECAPA = dict(input_size=80, lin_neurons=24, channels=(16, 16, 16, 16, 48),
                  kernel_sizes=(5, 3, 3, 3, 1), dilations=(1, 2, 3, 4, 1), attention_channels=8,
                  res2net_scale=4, se_channels=8, global_context=True)


def speech_wave(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-ish test signal: harmonics with a wobbling pitch, noise, an amplitude envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t) ** 2
    return (0.2 * env * voiced + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def spec(name: str, extractor: str, dim: int, weights, **kw) -> FeatureSpec:
    return FeatureSpec(name=name, modality="audio", extractor=extractor, dim=dim,
                       weights=str(weights), **kw)


def speech_spec(folder, dim: int = 32, **options) -> FeatureSpec:
    opts = {"layer": "last", "chunk_s": 60.0, "overlap_s": 1.0, **options}
    return spec("speech", "hf_speech", dim, folder, rate=50, options=opts,
                input={"sample_rate": SR, "window": 0.025, "hop": 0.02})


def loaded(s: FeatureSpec):
    ex = create(s)
    ex.load()
    return ex


# ------------------------------------------------------------------------------ fixtures


def _save_speech(kind: str, folder, do_normalize: bool = True, **overrides):
    cfg_cls, model_cls = (getattr(transformers, n) for n in HF_KINDS[kind])
    torch.manual_seed(0)
    model = model_cls(cfg_cls(**{**TINY_SPEECH, **overrides})).eval()
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=list(HF_KINDS))
def speech_model(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, folder, _save_speech(request.param, folder)


@pytest.fixture(scope="module")
def w2v_layer_norm(tmp_path_factory):
    """A large-style wav2vec2 (layer-norm front end, stable layer norm), no preprocessor file;
    its config.json says do_normalize (as some exported model folders do)."""
    folder = tmp_path_factory.mktemp("w2v_ln")
    model = _save_speech("wav2vec2", folder, feat_extract_norm="layer", do_stable_layer_norm=True)
    (folder / "preprocessor_config.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "do_normalize": True}))
    return folder, model


def direct(model, wav: np.ndarray, normalize: bool = True):
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=normalize)
    x = fe(wav, sampling_rate=SR, return_tensors="pt").input_values
    with torch.inference_mode():
        return model(x, output_hidden_states=True)


# ------------------------------------------------------------------------------ registry


def test_registered_and_import_is_cheap():
    for name in ("hf_speech", "ecapa", "deepspectrum"):
        assert name in EXTRACTORS
    code = ("import sys, extract.extractors; "
            "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ hf_speech


def test_frame_geometry_matches_transformers(speech_model):
    _, _, model = speech_model
    geo = FrameGeometry(tuple(model.config.conv_kernel), tuple(model.config.conv_stride))
    assert (geo.stride, geo.receptive_field) == (320, 400)
    lengths = [400, 719, 720, 16000, 16319, 16320, 48123]
    expected = model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    assert [geo.n_frames(n) for n in lengths] == expected
    assert geo.n_frames(399) == geo.n_frames(0) == 0
    np.testing.assert_allclose(geo.times(3), [0.0125, 0.0325, 0.0525])


def test_hf_speech_matches_direct_model(speech_model):
    kind, folder, model = speech_model
    wav = speech_wave(2.3)
    rows = loaded(speech_spec(folder)).extract(wav)
    ref = direct(model, wav).last_hidden_state[0].numpy()
    values = rows.values[""]
    assert values.dtype == np.float32 and values.shape == ref.shape == (114, 32)
    np.testing.assert_allclose(values, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows.times, 0.02 * np.arange(114) + 0.0125)
    assert rows.mask is None


def test_hf_speech_loads_ctc_checkpoint_and_reports_missing_hub_id(tmp_path):
    """``*ForCTC`` folders (wav2vec2-base-960h) load as the bare model; an uncached hub id is
    reported as unavailable, not downloaded."""
    torch.manual_seed(1)
    ctc = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**TINY_SPEECH, vocab_size=12))
    ctc.eval().save_pretrained(tmp_path)
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path)
    wav = speech_wave(1.0)
    rows = loaded(speech_spec(tmp_path)).extract(wav)
    np.testing.assert_allclose(rows.values[""], direct(ctc.wav2vec2, wav).last_hidden_state[0],
                               atol=1e-6)
    hub = speech_spec("no-such-org/no-such-wav2vec2")
    status = EXTRACTORS.get("hf_speech").check(hub)
    assert not status.ready and "Hugging Face cache" in status.reason


def test_hf_speech_layer_selection(speech_model):
    _, folder, model = speech_model
    wav = speech_wave(1.5)
    out = direct(model, wav)
    hs = [h[0].numpy() for h in out.hidden_states]
    assert len(hs) == 3
    got = {layer: loaded(speech_spec(folder, layer=layer)).extract(wav).values[""]
           for layer in ("last", 0, 1, 2, -1, "mean")}
    for layer in (0, 1, 2, -1):
        np.testing.assert_allclose(got[layer], hs[layer], atol=1e-6, err_msg=f"layer {layer}")
    np.testing.assert_allclose(got["mean"], np.mean(hs, axis=0), atol=1e-6)
    assert all(v.shape == (74, 32) for v in got.values())
    for a, b in [(0, 1), (1, 2), (0, "last"), ("mean", "last"), ("mean", 0)]:
        assert np.abs(got[a] - got[b]).max() > 1e-3, (a, b)


def test_hf_speech_stable_layer_norm_last_vs_index(w2v_layer_norm):
    folder, model = w2v_layer_norm
    wav = speech_wave(1.0)
    last = loaded(speech_spec(folder)).extract(wav).values[""]
    top = loaded(speech_spec(folder, layer=-1)).extract(wav).values[""]
    out = direct(model, wav, normalize=True)  # no preprocessor file: config.json do_normalize
    np.testing.assert_allclose(last, out.last_hidden_state[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(top, out.hidden_states[-1][0].numpy(), atol=1e-6)
    assert np.abs(last - top).max() > 1e-2  # last_hidden_state has the final LayerNorm


def test_hf_speech_normalisation_follows_preprocessor(tmp_path):
    model = _save_speech("wavlm", tmp_path, do_normalize=False)
    wav = 0.3 * speech_wave(1.0) + 0.05
    raw = loaded(speech_spec(tmp_path)).extract(wav).values[""]
    np.testing.assert_allclose(raw, direct(model, wav, normalize=False).last_hidden_state[0],
                               atol=1e-6)
    forced = loaded(speech_spec(tmp_path, normalize=True)).extract(wav).values[""]
    np.testing.assert_allclose(forced, direct(model, wav).last_hidden_state[0], atol=1e-6)
    assert np.abs(raw - forced).max() > 1e-3


def test_hf_speech_without_preprocessor_is_refused_unless_told(tmp_path):
    model = _save_speech("wav2vec2", tmp_path)
    (tmp_path / "preprocessor_config.json").unlink()  # a bare wav2vec2-base-960h-like folder
    with pytest.raises(ConfigError, match=r"no preprocessor_config.json.*options.normalize"):
        loaded(speech_spec(tmp_path))
    wav = 0.3 * speech_wave(1.0) + 0.05
    for flag in (True, False):
        rows = loaded(speech_spec(tmp_path, normalize=flag)).extract(wav).values[""]
        np.testing.assert_allclose(rows, direct(model, wav, flag).last_hidden_state[0],
                                   atol=1e-6)


def test_plan_chunks_cover_every_frame_once():
    for n, chunk, overlap in [(500, 100, 30), (101, 100, 10), (1000, 300, 0), (777, 50, 49)]:
        plan = plan_chunks(n, chunk, overlap)
        keeps = [(a, b) for _, a, b in plan]
        assert keeps[0][0] == 0 and keeps[-1][1] == n
        assert all(b1 == a2 for (_, b1), (a2, _) in zip(keeps, keeps[1:], strict=False))
        for i, (first, a, b) in enumerate(plan):
            assert first <= a < b <= min(first + chunk, n)
            if i > 0:
                assert a - first >= overlap // 2
            if i < len(plan) - 1:
                assert first + chunk - b >= overlap // 2


def check_local_layer_chunking(folder) -> None:
    """Layer 0 (conv front end + 16-frame positional conv) sees only ±8 frames, so chunks with
    >= 0.16 s of context each side must reproduce the whole-signal rows; two chunk sizes."""
    wav = speech_wave(7.1)
    whole = loaded(speech_spec(folder, layer=0)).extract(wav)
    assert whole.values[""].shape == (354, 32)
    for chunk_s, overlap_s in [(2.0, 0.6), (3.3, 1.0)]:
        rows = loaded(speech_spec(folder, layer=0, chunk_s=chunk_s, overlap_s=overlap_s,
                                  batch_size=2)).extract(wav)
        assert rows.values[""].shape == whole.values[""].shape
        np.testing.assert_array_equal(rows.times, whole.times)
        np.testing.assert_allclose(rows.values[""], whole.values[""], atol=5e-5,
                                   err_msg=f"chunk_s={chunk_s}")
    # without overlap the positional conv loses context at the seams: the check has teeth
    naive = loaded(speech_spec(folder, layer=0, chunk_s=2.0, overlap_s=0.0)).extract(wav)
    assert np.abs(naive.values[""] - whole.values[""]).max() > 1e-2


def test_hf_speech_chunking_exact_where_the_model_is_local(speech_model):
    """Group-norm front end: its statistics are taken over the whole waveform for chunks."""
    check_local_layer_chunking(speech_model[1])


def test_hf_speech_chunking_exact_layer_norm_front_end(w2v_layer_norm):
    check_local_layer_chunking(w2v_layer_norm[0])


def test_utterance_stats_equal_the_first_convolution_statistics(speech_model):
    """The GroupNorm statistics used for chunks come from sample moments; they must equal the
    mean and variance of the first convolution's output over the whole waveform."""
    _, folder, model = speech_model
    ex = loaded(speech_spec(folder))
    x = ex.prepare(speech_wave(3.0))
    mean, var = ex.utterance_stats(x, rows_per_pass=1000)
    with torch.inference_mode():
        y = model.feature_extractor.conv_layers[0].conv(torch.from_numpy(x)[None, None])[0]
    np.testing.assert_allclose(mean, y.double().mean(1).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(var, y.double().var(1, unbiased=False).numpy(), rtol=1e-4)


def test_hf_speech_chunking_invariance_last_layer(speech_model):
    """Two chunk sizes vs the whole signal: same rows and times; values close away from the
    signal's ends (attention and a group-norm front end see different far context)."""
    _, folder, _ = speech_model
    wav = speech_wave(8.2, seed=3)
    whole = loaded(speech_spec(folder)).extract(wav)
    ref = whole.values[""]
    scale = np.abs(ref).mean()
    for chunk_s, overlap_s in [(2.5, 1.0), (4.0, 1.5)]:
        rows = loaded(speech_spec(folder, chunk_s=chunk_s, overlap_s=overlap_s)).extract(wav)
        assert rows.values[""].shape == ref.shape == (409, 32)
        np.testing.assert_array_equal(rows.times, whole.times)
        inner = slice(25, -25)  # frames away from the signal's ends (0.5 s)
        err = np.abs(rows.values[""][inner] - ref[inner]).max()
        assert err < 0.02 * scale, (chunk_s, err, scale)


def test_hf_speech_centers(speech_model):
    _, folder, _ = speech_model
    wav = speech_wave(2.0)
    ex = loaded(speech_spec(folder))
    full = ex.extract(wav)
    centers = np.array([-0.1, 0.0, 0.0333, 0.5, 1.2345, 1.99, 2.5])
    rows = ex.extract(wav, centers)
    np.testing.assert_array_equal(rows.times, centers)
    np.testing.assert_array_equal(rows.mask, [False, True, True, True, True, True, False])
    nearest = [0, 1, 24, 61, 98]  # frame centres 0.02 t + 0.0125 nearest to the valid centres
    np.testing.assert_array_equal(rows.values[""][1:6], full.values[""][nearest])
    assert not rows.values[""][[0, 6]].any()
    # pooled: the mean of the frames within ±0.1 s; ViPER segments between midpoints
    pooled = loaded(speech_spec(folder, at_centers=0.2)).extract(wav, np.array([1.0]))
    inside = np.abs(full.times - 1.0) <= 0.1
    np.testing.assert_allclose(pooled.values[""][0], full.values[""][inside].mean(0), atol=1e-5)
    seg = loaded(speech_spec(folder, at_centers="segment")).extract(wav, np.array([0.4, 1.0]))
    first = (full.times >= 0.4) & (full.times <= 0.7)
    np.testing.assert_allclose(seg.values[""][0], full.values[""][first].mean(0), atol=1e-5)


def test_hf_speech_errors(speech_model, tmp_path):
    _, folder, _ = speech_model
    with pytest.raises(ConfigError, match=r"32-d.*dim 768"):
        loaded(speech_spec(folder, dim=768))
    with pytest.raises(ConfigError, match="options.layer 7 is out of range"):
        loaded(speech_spec(folder, layer=7))
    with pytest.raises(ConfigError, match="unknown option 'pool'"):
        create(speech_spec(folder, pool="cls"))
    with pytest.raises(ConfigError, match="overlap_s is 3.0"):
        create(speech_spec(folder, chunk_s=2.0, overlap_s=3.0))
    with pytest.raises(ConfigError, match="options.layer is 'first'"):
        create(speech_spec(folder, layer="first"))
    bad_hop = speech_spec(folder)
    bad_hop.input["hop"] = 0.01
    with pytest.raises(ConfigError, match="declares input.hop 0.01"):
        loaded(bad_hop)
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match="not one"):
        loaded(speech_spec(tmp_path / "w.pth"))
    partial = tmp_path / "partial"
    transformers.Wav2Vec2Config(**TINY_SPEECH).save_pretrained(partial)
    from safetensors.torch import save_file

    save_file({"feature_projection.projection.bias": torch.zeros(32)},
              str(partial / "model.safetensors"))
    with pytest.raises(ConfigError, match="they would be random"):
        loaded(speech_spec(partial, normalize=True))
    short = loaded(speech_spec(folder)).extract(np.zeros(300, np.float32))
    assert short.values[""].shape == (0, 32) and short.times.shape == (0,)


# ------------------------------------------------------------------------------ windows


def test_plan_windows_matches_spectrogram_windows():
    from extract.models.spectrogram_image import windows

    wav = speech_wave(2.37)
    for centers in (None, np.array([-1.0, -0.2, 0.0, 0.51, 1.7, 2.37, 2.9, 9.0])):
        ref, ref_times = windows(wav, SR, 1.5, 0.1, centers)
        plan = plan_windows(len(wav), SR, 1.5, 0.1, centers)
        np.testing.assert_array_equal(plan.times, ref_times)
        from extract.extractors.audio_windows import cut_windows

        np.testing.assert_array_equal(cut_windows(wav, plan.starts, plan.win), ref)


# ------------------------------------------------------------------------------ ecapa


@pytest.fixture(scope="module")
def ecapa_ckpt(tmp_path_factory):
    from extract.models.ecapa import EcapaEmbedder, EcapaTdnn

    torch.manual_seed(0)
    model = EcapaTdnn(**TINY_ECAPA)
    for m in model.modules():  # non-trivial BatchNorm statistics, as a trained checkpoint has
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folder = tmp_path_factory.mktemp("ecapa")
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    return folder, EcapaEmbedder(model).eval()


def ecapa_spec(weights, dim: int = 24, **options) -> FeatureSpec:
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_ECAPA.items()}
    return spec("ecapa", "ecapa", dim, weights, rate=10,
                input={"sample_rate": SR, "window": 1.5, "hop": 0.1},
                options={"arch": arch, **options})


def test_ecapa_matches_direct_model(ecapa_ckpt):
    from extract.models.spectrogram_image import windows

    folder, embedder = ecapa_ckpt
    wav = speech_wave(3.05)
    rows = loaded(ecapa_spec(folder / "embedding_model.ckpt", batch_size=7)).extract(wav)
    wins, times = windows(wav, SR, 1.5, 0.1)
    ref = embedder.embed(wins)
    assert rows.values[""].shape == (17, 24) and rows.values[""].dtype == np.float32
    np.testing.assert_allclose(rows.values[""], ref, atol=1e-5)
    np.testing.assert_allclose(rows.times, times)
    np.testing.assert_allclose(rows.times[:2], [0.75, 0.85])
    # a folder holding embedding_model.ckpt (a hub snapshot) works too
    again = loaded(ecapa_spec(folder)).extract(wav)
    np.testing.assert_allclose(again.values[""], rows.values[""], atol=1e-6)


def test_ecapa_centers(ecapa_ckpt):
    from extract.models.spectrogram_image import windows

    folder, embedder = ecapa_ckpt
    wav = speech_wave(2.0)
    centers = np.arange(0.0, 2.4, 1 / 3)  # video frames at 3 fps; the last is past the end
    rows = loaded(ecapa_spec(folder)).extract(wav, centers)
    np.testing.assert_allclose(rows.times, centers, atol=0.5 / SR)
    np.testing.assert_array_equal(rows.mask, centers <= 2.0)
    wins, _ = windows(wav, SR, 1.5, centers=centers[:-1])
    np.testing.assert_allclose(rows.values[""][:-1], embedder.embed(wins), atol=1e-5)
    assert not rows.values[""][-1].any()


def test_ecapa_errors(ecapa_ckpt, tmp_path):
    folder, _ = ecapa_ckpt
    with pytest.raises(ConfigError, match=r"24-d.*dim 192"):
        loaded(ecapa_spec(folder, dim=192))
    with pytest.raises(ConfigError, match="unknown options.arch keys"):
        create(ecapa_spec(folder, arch={"width": 3}))
    with pytest.raises(ConfigError, match="holds no embedding_model.ckpt"):
        loaded(ecapa_spec(tmp_path))


# ------------------------------------------------------------------------------ deepspectrum


@pytest.fixture(scope="module")
def densenet_pth(tmp_path_factory):
    from extract.models.densenet import DenseNet

    torch.manual_seed(0)
    model = DenseNet(growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16,
                     num_classes=10).eval()
    path = tmp_path_factory.mktemp("densenet") / "densenet_tiny.pth"
    torch.save(model.state_dict(), path)
    return path, model


def ds_spec(weights, dim: int, **options) -> FeatureSpec:
    """The project's earlier DeepSpectrum variant (equal mel bands, 224 px, zero-padded tail),
    which the options keep; tests/test_deepspectrum_fidelity.py covers DeepSpectrum's own."""
    return spec("ds", "deepspectrum", dim, weights, rate=10,
                input={"sample_rate": SR, "window": 1.0, "hop": 0.1},
                options={"n_mels": 128, "colormap": "viridis", "freq_axis": "mel",
                         "plot_size": 224, "tail": "pad", **options})


def test_deepspectrum_matches_direct_model(densenet_pth):
    from extract.models.densenet import preprocess_rgb
    from extract.models.spectrogram_image import spectrogram_images, windows

    path, model = densenet_pth
    wav = speech_wave(1.62)
    rows = loaded(ds_spec(path, model.embedding_dim, batch_size=3)).extract(wav)
    wins, times = windows(wav, SR, 1.0, 0.1)
    with torch.inference_mode():
        pictures = spectrogram_images(wins, size=224, freq_axis="mel")
        ref = model.forward_features(preprocess_rgb(pictures, size=None))
    assert rows.values[""].shape == (8, model.embedding_dim) == ref.shape
    np.testing.assert_allclose(rows.values[""], ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(rows.times, times)
    centers = np.array([0.0, 0.8, 1.62])
    at = loaded(ds_spec(path, model.embedding_dim)).extract(wav, centers)
    np.testing.assert_allclose(at.times, centers, atol=0.5 / SR)
    wins, _ = windows(wav, SR, 1.0, centers=centers)
    with torch.inference_mode():
        pictures = spectrogram_images(wins, size=224, freq_axis="mel")
        ref = model.forward_features(preprocess_rgb(pictures, size=None))
    np.testing.assert_allclose(at.values[""], ref.numpy(), atol=1e-5)


def test_deepspectrum_errors(densenet_pth):
    path, model = densenet_pth
    with pytest.raises(ConfigError, match=rf"{model.embedding_dim}-d.*dim 1024"):
        loaded(ds_spec(path, 1024))
    with pytest.raises(ConfigError, match="unknown matplotlib colormap"):
        loaded(ds_spec(path, model.embedding_dim, colormap="no_such_map"))
    short = ds_spec(path, model.embedding_dim)
    short.input["window"] = 0.02
    with pytest.raises(ConfigError, match="shorter than n_fft"):
        create(short)
