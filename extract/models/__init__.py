"""Backbone models, front ends and checkpoint helpers written in pure PyTorch."""
