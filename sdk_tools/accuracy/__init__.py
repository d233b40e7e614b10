"""Accuracy: a bundle against its PyTorch checkpoint, and a device against the reference."""
