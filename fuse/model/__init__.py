"""The fusion network: per-feature projection, concatenation fusion, temporal encoder, head."""
