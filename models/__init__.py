"""Network definitions, the model registry, Grad-CAM and the shipped model cards.

Importing this package registers every model (``dacnn``, ``simplecnn``,
``micropainnet``, ``painxception``).
"""

from painmon.models import baselines, dacnn  # noqa: F401  (imported to register the models)
from painmon.models.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_SIZE,
    PainModel,
    gradcam,
    gradcam_from_gradient,
    make_pretrained_cfg,
    saliency_map,
    upsample_heatmap,
)
from painmon.models.layers import ClassifierHead
from painmon.models.registry import (
    create_model,
    describe_models,
    format_model_table,
    format_params,
    list_models,
    register_model,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_SIZE",
    "ClassifierHead",
    "PainModel",
    "create_model",
    "describe_models",
    "format_model_table",
    "format_params",
    "gradcam",
    "gradcam_from_gradient",
    "list_models",
    "make_pretrained_cfg",
    "register_model",
    "saliency_map",
    "upsample_heatmap",
]
