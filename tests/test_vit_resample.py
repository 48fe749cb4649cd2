"""Crops of another size are resized as the checkpoint's image processor does: PIL on the uint8
crops with its ``resample`` filter (bicubic for vit-mae-base), then rescale and normalise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.catalog import parse_spec
from extract.errors import ConfigError
from extract.extractors.base import create

TINY_MAE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64, "image_size": 64, "patch_size": 16,
            "decoder_hidden_size": 16, "decoder_num_hidden_layers": 1,
            "decoder_num_attention_heads": 2, "decoder_intermediate_size": 32}


def _mae_folder(root: Path, resample: int | None) -> Path:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    folder = root / f"mae_{resample}"
    ViTMAEForPreTraining(ViTMAEConfig(**TINY_MAE)).eval().save_pretrained(folder)
    if resample is not None:  # vit-mae-base's processor: bicubic, ImageNet statistics
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "do_normalize": True, "do_rescale": True, "do_resize": True,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
            "resample": resample, "rescale_factor": 1 / 255,
            "size": {"height": 64, "width": 64}}))
    return folder


def _extractor(folder: Path, face_size: int):
    spec = parse_spec("mae", {"modality": "visual", "extractor": "vit_mae", "dim": 32,
                              "weights": str(folder), "input": {"face_size": face_size}})
    ex = create(spec)
    ex.load()
    return ex


@pytest.mark.parametrize("resample", [3, 2])
def test_resize_follows_the_processor(tmp_path: Path, resample: int) -> None:
    from transformers import ViTImageProcessorPil

    folder = _mae_folder(tmp_path, resample)
    crops = np.random.default_rng(1).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    ex = _extractor(folder, 112)
    got = ex.preprocess(crops)
    processor = ViTImageProcessorPil.from_pretrained(str(folder))
    assert int(processor.resample) == resample
    want = processor(images=list(crops), return_tensors="pt").pixel_values
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # a bilinear torch resize (what was done before) is measurably different
    from extract.extractors.visual_common import resize_normalize

    plain = resize_normalize(crops, (64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (plain - want).abs().mean() > 1e-3


def test_default_and_bad_resample(tmp_path: Path) -> None:
    from PIL import Image

    folder = _mae_folder(tmp_path, None)  # no processor file: bilinear, ImageNet statistics
    crops = np.random.default_rng(2).integers(0, 256, (2, 80, 80, 3), dtype=np.uint8)
    x = _extractor(folder, 80).preprocess(crops)
    resized = np.asarray(Image.fromarray(crops[0]).resize((64, 64), Image.Resampling.BILINEAR))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    ref = (torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(x[0], ref, rtol=0, atol=1e-5)
    same = _extractor(folder, 64).preprocess(crops[:, :64, :64])  # no resize at model size
    assert same.shape == (2, 3, 64, 64)
    bad = _mae_folder(tmp_path, 3)
    cfg = json.loads((bad / "preprocessor_config.json").read_text())
    (bad / "preprocessor_config.json").write_text(json.dumps({**cfg, "resample": 9}))
    with pytest.raises(ConfigError, match="resample 9 is not a PIL filter"):
        _extractor(bad, 112)
