"""Stage 1 of the affect feature store: decode media, find faces, run backbones, write Zarr."""

__version__ = "0.1.0"
