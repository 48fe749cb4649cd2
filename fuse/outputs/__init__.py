"""What a run writes: the run folder layout, the epoch log, plots, the metrics table."""
