"""Segmented consistency distillation: targets, losses and the motion weight map (no Lightning)."""
