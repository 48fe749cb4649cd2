"""Features in and out of the store: import (csv, h5, npy) and export (h5, csv).

Formats are registered in :data:`READERS` / :data:`WRITERS` by the modules imported here.
"""

from extract.io import csv_format, h5_format, npy_format  # noqa: F401  (fill the registries)
from extract.io.exporter import export_feature
from extract.io.formats import READERS, WRITERS, ImportOptions
from extract.io.importer import ImportReport, import_features

__all__ = ["READERS", "WRITERS", "ImportOptions", "ImportReport", "export_feature",
           "import_features"]
