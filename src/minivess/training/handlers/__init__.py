"""Handlers: each concern of a training run (stopping, checkpoints, tracking, progress)."""
