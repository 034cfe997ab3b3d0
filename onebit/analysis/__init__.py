"""Offline analysis of models and checkpoints."""
