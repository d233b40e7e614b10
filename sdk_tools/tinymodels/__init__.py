"""Tiny Gemma 4 reference models of the real architecture, made and trained by our own code."""
