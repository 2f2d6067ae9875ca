"""Names of the training options, torch-free: the CLI, the retraining dialog and the trainer
read the same tuples, so a new mode is added in one place."""

from __future__ import annotations

# How training crops are augmented (see painmon.core.research.augment).
AUGMENT_MODES = ("full", "color", "none", "periphery")
# torch.compile mode of a training run: "reduce-overhead" uses CUDA graphs (CUDA only).
COMPILE_MODES = ("none", "default", "reduce-overhead")
# How cross-validation trains its fold models: one process each, or all stacked in one.
CV_ENGINES = ("processes", "stacked", "stacked-bmm")
# The stacked engines and how each runs the members' layers (see fit_stacked's ``ops``).
STACKED_ENGINE_OPS = {"stacked": "vmap", "stacked-bmm": "bmm"}
