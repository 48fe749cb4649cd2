"""``python -m fuse``."""

from fuse.cli import main

main()
