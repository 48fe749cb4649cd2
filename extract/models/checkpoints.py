"""Shared checkpoint helpers: read state dicts from ``.pth``/``.safetensors``, read Keras ``.h5``
weight files, write safetensors, hash files, and load into modules with errors that name the
offending keys.

``torch.load`` is always called with ``weights_only=True`` and ``map_location="cpu"``, so a
checkpoint can hold tensors and plain containers only (no pickled code).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extract.errors import ExtractError

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
KERAS_SUFFIXES = (".h5", ".hdf5")
#: Keras variable names → their role (Keras 2 names end in ``:0``; Keras 3 stores bare names).
KERAS_VARIABLES = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")
#: Keys under which training scripts commonly nest the weights.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
_MAX_LISTED = 12


class CheckpointError(ExtractError, ValueError):
    """A checkpoint file cannot be read, or does not match the model it is loaded into."""


def _format_keys(keys: Iterable[str]) -> str:
    """At most ``_MAX_LISTED`` keys, then a count of the rest."""
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    rest = len(keys) - _MAX_LISTED
    return f"{shown}, ... (+{rest} more)" if rest > 0 else shown


def unwrap_state_dict(obj: object, source: str = "<state dict>") -> StateDict:
    """Return the tensor mapping inside ``obj``: unnest common containers, strip ``module.``."""
    while isinstance(obj, Mapping):
        nested = [k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)]
        if not nested:
            break
        obj = obj[nested[0]]
    if not isinstance(obj, Mapping):
        kind = type(obj).__name__
        raise CheckpointError(f"{source}: expected a state dict (mapping), got {kind}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{source}: entries that are not tensors: {_format_keys(bad)}")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state_dict(path: str | Path) -> StateDict:
    """Read a state dict from ``.pth/.pt/.bin/.ckpt`` (torch) or ``.safetensors`` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error type
            raise CheckpointError(f"{path} is not a loadable checkpoint (safetensors: "
                                  f"{load_error_reason(exc)})") from exc
    if suffix not in TORCH_SUFFIXES:
        known = ", ".join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))
        raise CheckpointError(f"{path}: unknown checkpoint suffix {suffix!r}; expected {known}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, ...)
        raise CheckpointError(f"{path} is not a loadable checkpoint "
                              f"({load_error_reason(exc)})") from exc
    return unwrap_state_dict(obj, source=str(path))


def is_keras_file(path: str | Path) -> bool:
    """A Keras HDF5 weights file by its suffix (``.h5``, ``.hdf5``, ``.weights.h5``)."""
    return Path(path).suffix.lower() in KERAS_SUFFIXES


def _h5_list_attr(group: object, name: str) -> list[str]:
    """A list attribute as Keras writes it (split into ``name0``, ``name1``, ... when long)."""
    attrs = group.attrs  # type: ignore[attr-defined]
    if name in attrs:
        values = list(attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in attrs:
            values.extend(attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _variable_role(weight_name: str, source: str, layer: str) -> str:
    """``conv1/conv/kernel:0`` or ``conv1_conv/kernel`` → ``kernel``."""
    leaf = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
    if leaf not in KERAS_VARIABLES:
        raise CheckpointError(f"{source}: layer {layer!r} holds an unknown variable "
                              f"{weight_name!r} (known: {', '.join(KERAS_VARIABLES)})")
    return leaf


def read_keras_h5(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Every layer's variables in a Keras HDF5 weights file: ``{layer: {role: array}}``.

    Reads the legacy layout that Keras 2 / tf.keras ``save_weights('*.h5')`` and
    ``model.save('*.h5')`` (Keras 3 too) write: a ``layer_names`` attribute, one group per layer
    with a ``weight_names`` attribute; a full model keeps them under ``model_weights``. That is
    the format of the Keras Applications ImageNet files. Keras 3 ``*.weights.h5`` files are
    refused (they name layers by class, not as the model does). Roles: ``kernel``, ``bias``,
    ``gamma``, ``beta``,
    ``moving_mean``, ``moving_variance``; layers without variables are left out. Arrays keep
    Keras' shapes (convolution kernels ``(kh, kw, in, out)``, dense kernels ``(in, out)``).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    source = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read as an HDF5 file: {exc}") from exc
    layers: dict[str, dict[str, np.ndarray]] = {}
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        names = _h5_list_attr(root, "layer_names")
        if names:
            for layer in names:
                group = root[layer]
                weight_names = _h5_list_attr(group, "weight_names")
                if weight_names:
                    layers[layer] = {_variable_role(w, source, layer): np.asarray(group[w])
                                     for w in weight_names}
        elif "layers" in root and "vars" in root:
            raise CheckpointError(f"{source} is a Keras 3 .weights.h5 file, which names layers "
                                  "by class (conv2d_7), not by model layer; write the legacy "
                                  "HDF5 format instead: model.save('NAME.h5')")
        else:
            raise CheckpointError(f"{source}: not a Keras weights file (no layer_names "
                                  "attribute and no layers/ group)")
    if not layers:
        raise CheckpointError(f"{source}: the Keras weights file holds no variables")
    return layers


def load_error_reason(exc: BaseException) -> str:
    """Why a checkpoint did not load, in one line, without torch's advice to load it unsafely
    (a file that only loads with pickled code is refused on purpose)."""
    text = str(exc)
    if "weights_only" in text or "WeightsUnpickler" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler" in text else ""
        detail = " ".join(detail.split("Please use", 1)[0].split("Check the documentation")[0]
                          .split())
        if "GLOBAL" in detail or "global" in detail:
            return ("it holds pickled Python objects, which are never loaded; save the weights "
                    "as a plain state dict or .safetensors" + (f": {detail}" if detail else ""))
        return ("not a torch state dict file" + (f": {detail.rstrip('.')}" if detail else ""))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__


def save_safetensors(
    state: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a module's (or a mapping's) tensors to ``path`` as safetensors; returns the path."""
    from safetensors.torch import save_file

    tensors = state.state_dict() if isinstance(state, nn.Module) else state
    # clone: safetensors refuses tensors that share storage; contiguous: it needs dense tensors
    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(plain, str(path), metadata=dict(metadata) if metadata else None)
    log.debug("wrote %d tensors to %s", len(plain), path)
    return path


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _fill_batch_counters(module: nn.Module, state: StateDict) -> StateDict:
    """Add ``num_batches_tracked`` counters that old checkpoints lack (value 0)."""
    expected = module.state_dict()
    missing = [k for k in expected if k.endswith(".num_batches_tracked") and k not in state]
    if not missing:
        return state
    filled = dict(state)
    for key in missing:
        filled[key] = torch.zeros_like(expected[key])
    return filled


def check_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str, strict: bool = True
) -> None:
    """Raise :class:`CheckpointError` naming mis-shaped (and, if strict, missing/extra) keys."""
    expected = module.state_dict()
    missing = set(expected) - set(state) if strict else set()
    unexpected = set(state) - set(expected) if strict else set()
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_format_keys(unexpected)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_format_keys(shapes)}")
    if problems:
        name = type(module).__name__
        raise CheckpointError(f"{source} does not fit {name}: " + "; ".join(problems))


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str = "<state dict>",
    strict: bool = True,
) -> nn.Module:
    """Load ``state`` into ``module``; with ``strict`` every key must match in name and shape."""
    state = _fill_batch_counters(module, dict(state))
    check_state_dict(module, state, source, strict=strict)
    result = module.load_state_dict(state, strict=strict)
    if not strict and (result.missing_keys or result.unexpected_keys):
        log.warning(
            "%s: missing %s; unexpected %s",
            source,
            _format_keys(result.missing_keys),
            _format_keys(result.unexpected_keys),
        )
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in module.parameters())
