"""Post-processing: clipping, temporal smoothing, decision thresholds — tuned on validation."""
