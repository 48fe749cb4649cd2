"""Which ``--batch-size NAME=B`` fits on one 80 GB GPU, computed (not measured) from activation
sizes.

Each backbone is built at its real size on PyTorch's ``meta`` device (shapes only, no memory,
no GPU), cast to the precision, and run forward in inference mode at two batch sizes while a
dispatch mode tracks every tensor an operator creates and frees (weak references), as eager
execution would hold them: the peak of live activation bytes. Peak = fixed + per_item * B is
fitted through the two points; the largest B with ``weights + fixed + per_item * B`` under the
budget (80 GB less 10 % for the CUDA context, allocator fragmentation and cuDNN / SDPA
workspaces, which this does not see) is printed, with a power of two to use.

Not counted: kernel workspaces, the caching allocator's rounding, cuDNN algorithm choices that
keep extra buffers. Those are why the budget keeps 10 % spare; measure with ``bench/gpu.py``
where a GPU is available.

    python bench/batch_memory.py                 # bf16 and fp32, all backbones, ~1 min on CPU
    python bench/batch_memory.py --gb 80 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("batch_memory")


class PeakLive(TorchDispatchMode):
    """Track bytes of tensors created by operators while they are alive; keep the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._seen:
            return
        self._seen.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)

        def free(key: int = key, size: int = size) -> None:
            self.live -= size
            self._seen.discard(key)

        weakref.finalize(storage, free)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                self._track(t)
        return out


@dataclass
class Backbone:
    name: str  # what it is
    features: str  # the catalog features it serves
    item: str  # what one batch item is
    build: Callable[[], torch.nn.Module]
    example: Callable[[int], torch.Tensor]  # batch size → input on meta
    forward: Callable[[torch.nn.Module, torch.Tensor], object]
    precisions: tuple[str, ...] = ("bf16", "fp32")  # ECAPA builds float32 masks: fp32 only


def _vit() -> torch.nn.Module:
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig(), add_pooling_layer=False)


def _mae() -> torch.nn.Module:
    from transformers import ViTMAEConfig, ViTMAEModel

    return ViTMAEModel(ViTMAEConfig(mask_ratio=0.0))


def _w2v(large: bool) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        cfg = (Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, feat_extract_norm="layer",
                              do_stable_layer_norm=True, conv_bias=True)
               if large else Wav2Vec2Config())
        return Wav2Vec2Model(cfg)

    return build


def _images(size: int) -> Callable[[int], torch.Tensor]:
    return lambda b: torch.empty(b, 3, size, size, device="meta")


def backbones() -> list[Backbone]:
    from extract.models.densenet import densenet121
    from extract.models.ecapa import EcapaEmbedder
    from extract.models.iresnet import iresnet

    chunk = 20 * 16000  # hf_speech's default chunk_s
    return [
        Backbone("IResNet-100", "ires100, fau", "112 px face", lambda: iresnet("r100"),
                 _images(112), lambda m, x: m(x)),
        Backbone("ViT-B/16", "vitface", "224 px face", _vit, _images(224),
                 lambda m, x: m(pixel_values=x)),
        Backbone("ViT-MAE-B (no mask)", "mae", "224 px face", _mae, _images(224),
                 lambda m, x: m(pixel_values=x)),
        Backbone("DenseNet-121", "densenet, deepspectrum", "224 px picture", densenet121,
                 _images(224), lambda m, x: m.forward_features(x)),
        Backbone("wav2vec2-base", "wav2vec2, hubert, wavlm", "20 s chunk", _w2v(False),
                 lambda b: torch.empty(b, chunk, device="meta"), lambda m, x: m(x)),
        Backbone("wav2vec2-large", "wav2vec2_large, hubert_large, wavlm_large", "20 s chunk",
                 _w2v(True), lambda b: torch.empty(b, chunk, device="meta"), lambda m, x: m(x)),
        Backbone("ECAPA-TDNN", "ecapa", "1.5 s window", EcapaEmbedder,
                 lambda b: torch.empty(b, 24000, device="meta"), lambda m, x: m.model(
                     torch.empty(x.shape[0], 151, 80, device="meta", dtype=x.dtype)),
                 precisions=("fp32",)),
    ]


def peak_bytes(bb: Backbone, model: torch.nn.Module, batch: int, dtype: torch.dtype) -> int:
    x = bb.example(batch)
    if x.is_floating_point():
        x = x.to(dtype)
    mode = PeakLive()
    with torch.inference_mode(), mode:
        out = bb.forward(model, x)
        del out
    return mode.peak


@dataclass
class Row:
    backbone: str
    features: str
    item: str
    precision: str
    weights_gb: float
    per_item_mb: float
    fixed_mb: float
    max_batch: int
    suggested: int


def compute(gb: float, spare: float = 0.10) -> list[Row]:
    rows = []
    budget = gb * 1e9 * (1 - spare)
    for bb in backbones():
        with torch.device("meta"):
            model = bb.build().eval()
        for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            if precision not in bb.precisions:
                continue
            model = model.to(dtype)
            weights = sum(p.numel() * p.element_size() for p in model.parameters())
            weights += sum(b.numel() * b.element_size() for b in model.buffers())
            a, b = 2, 4
            pa, pb = peak_bytes(bb, model, a, dtype), peak_bytes(bb, model, b, dtype)
            per_item = (pb - pa) / (b - a)
            fixed = max(pa - per_item * a, 0.0)
            fits = int((budget - weights - fixed) // per_item) if per_item > 0 else 0
            suggested = 1 << (max(fits, 1).bit_length() - 1)
            rows.append(Row(bb.name, bb.features, bb.item, precision, weights / 1e9,
                            per_item / 1e6, fixed / 1e6, fits, suggested))
            log.info("%s %s: %.1f MB per item", bb.name, precision, per_item / 1e6)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=80.0, help="GPU memory in GB (default 80)")
    parser.add_argument("--spare", type=float, default=0.10,
                        help="share kept free for context and workspaces (default 0.10)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = compute(args.gb, args.spare)
    print(f"computed from activation sizes (meta device), not measured: {args.gb:g} GB, "
          f"{args.spare:.0%} kept spare")
    head = ("backbone", "item", "prec", "weights GB", "MB/item", "max B", "use B")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r.backbone} | {r.item} | {r.precision} | {r.weights_gb:.2f} | "
              f"{r.per_item_mb:.1f} | {r.max_batch} | {r.suggested} |")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
