"""Seeded tiny checkpoints of real architectures, with random (untrained) weights.

For demos and tests on machines where no pretrained weights can be downloaded: the files are
in the formats users have (a torchvision-style DenseNet state dict, a Hugging Face wav2vec 2.0
folder), so they exercise exactly the loading code real checkpoints go through. Their features
carry no learned meaning: say so wherever they are used.
"""

from __future__ import annotations

import json
from pathlib import Path


def make_tiny_weights(folder: str | Path, seed: int = 0) -> dict[str, tuple[str, int]]:
    """Write ``densenet_tiny.pth`` and ``wav2vec2_tiny/``; returns feature → (path, dim)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from extract.models.densenet import DenseNet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dense = DenseNet(growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16).eval()
    with torch.no_grad():
        dim = int(dense.forward_features(torch.zeros(1, 3, 224, 224)).shape[1])
    torch.save(dense.state_dict(), folder / "densenet_tiny.pth")
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, conv_dim=(32,) * 7,
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    Wav2Vec2Model(cfg).save_pretrained(folder / "wav2vec2_tiny")
    # the preprocessor file a hub checkpoint carries: normalise each waveform, 16 kHz
    (folder / "wav2vec2_tiny" / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True,
        "feature_size": 1, "padding_side": "right", "padding_value": 0.0,
        "return_attention_mask": False, "sampling_rate": 16000}, indent=2))
    return {"densenet": (str(folder / "densenet_tiny.pth"), dim),
            "wav2vec2": (str(folder / "wav2vec2_tiny"), 32)}
