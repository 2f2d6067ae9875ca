"""Our autograd-free Grad-CAM against pytorch-grad-cam (test-only reference), and saliency maps.

pytorch-grad-cam declares torchvision and opencv-python-headless as requirements; both
would break this environment (torchvision does not import beside torch 2.13's CPU
build, and a second cv2 distribution breaks OpenCV). CI installs it with --no-deps,
and the few torchvision names it imports at module level are stubbed here: Grad-CAM's
arithmetic (activations, gradients, weights, ReLU, min-max scaling) never calls them.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types

import cv2
import numpy as np
import pytest
import torch

from painmon.models import create_model, gradcam, list_models, saliency_map, upsample_heatmap

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class _TorchvisionStub(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*_args, **_kwargs):
            raise RuntimeError(f"torchvision.{name} is a test stub")

        return unavailable


@pytest.fixture(scope="module")
def grad_cam_package():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                     "torchvision.models", "torchvision.ops"):  # fmt: skip
            module = _TorchvisionStub(name)
            module.__path__ = []
            module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            sys.modules.setdefault(name, module)
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        if IN_CI:
            pytest.fail("pytorch-grad-cam missing: .ci/run installs grad-cam --no-deps")
        pytest.skip("pip install --no-deps grad-cam==1.5.7 ttach to run the reference check")
    return pytorch_grad_cam.GradCAM, ClassifierOutputTarget


def _trained_like(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_gradcam_matches_pytorch_grad_cam(name, grad_cam_package):
    GradCAM, ClassifierOutputTarget = grad_cam_package
    model = _trained_like(name)
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    layer = model.get_submodule(model.gradcam_layer)
    targets = [ClassifierOutputTarget(int(c)) for c in model(x).argmax(1)]
    with GradCAM(model=model, target_layers=[layer]) as cam:
        reference = cam(input_tensor=x, targets=targets)  # (B, 64, 64), min-max scaled
    ours = gradcam(model, x).numpy()
    compared = 0
    for i in range(len(x)):
        if reference[i].max() - reference[i].min() < 1e-6:
            continue  # an all-zero map has no correlation to compare
        up = cv2.resize(ours[i].astype(np.float32), (64, 64), interpolation=cv2.INTER_LINEAR)
        assert np.corrcoef(up.ravel(), reference[i].ravel())[0, 1] >= 0.999
        compared += 1
    assert compared >= len(x) // 2


def test_upsampled_heatmap_and_saliency():
    model = _trained_like("dacnn")
    x = torch.randn(2, 3, 64, 64)
    cam = upsample_heatmap(gradcam(model, x), 64)
    assert cam.shape == (2, 64, 64) and float(cam.min()) >= 0 and float(cam.max()) <= 1
    sal = saliency_map(model, x)
    assert sal.shape == (2, 64, 64)
    assert float(sal.amax(dim=(1, 2)).min()) == pytest.approx(1.0)
    # the gradient is with respect to the input: a finite difference on the most salient
    # pixel moves the logit more than one on the least salient pixel
    target = int(model(x[:1]).argmax(1))
    flat = sal[0].flatten()
    hot, cold = int(flat.argmax()), int(flat.argmin())
    moves = []
    for pixel in (hot, cold):
        bumped = x[:1].clone()
        bumped.view(1, 3, -1)[0, :, pixel] += 0.05
        with torch.no_grad():
            moves.append(abs(float(model(bumped)[0, target] - model(x[:1])[0, target])))
    assert moves[0] > moves[1]
