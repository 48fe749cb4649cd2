"""Training: optimiser and schedule, EMA, checkpoints, inference, the loop."""
