"""Experiments at scale: job pools (local or Ray), ablation grids, cross-validation, ensembles."""
