"""Importing this package registers every extractor (heavy imports stay inside each one)."""

import importlib
import logging

log = logging.getLogger(__name__)

_MODULES = ("audio_lld", "fbank", "densenet", "iresnet", "vit", "mini_xception", "speech",
            "ecapa", "deepspectrum", "audio_functionals")

for _name in _MODULES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{_name}":  # a real import error inside an existing module
            raise
