"""Features from the store onto the label time grid: align, fill, normalise, segment."""
