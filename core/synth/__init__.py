"""Synthetic patients: drawn faces with known action units, datasets and scripted streams."""
