"""The feature store: the one door to the bytes both stages share.

``open_store(path, mode)`` / :class:`FeatureStore` on a local folder or an fsspec URL. Layout
(format 2: rows of many videos in a few packs per feature, an append-only index, a checksum per
video) and its reasons: ``docs/store.md``.
"""

from extract.store.common import (
    FeatureArray,
    FeatureInfo,
    VerifyReport,
    check_name,
    fingerprint,
    gc_paused,
    package_versions,
    regular_time,
    row_rate,
)
from extract.store.core import FeatureStore, open_store
from extract.store.fs import is_url
from extract.store.layout import RUNS_GROUP, STORE_FORMAT

__all__ = ["RUNS_GROUP", "STORE_FORMAT", "FeatureArray", "FeatureInfo", "FeatureStore",
           "VerifyReport", "check_name", "fingerprint", "gc_paused", "is_url", "open_store",
           "package_versions", "regular_time", "row_rate"]
