"""CIFAR-10 classifier trained by ``benchmarks/train_cifar10.py`` (paper Table 1).

Architecture: ResNet-9 (the "DAWNBench" ResNet of D. Page) at half width, channels
32-64-128-256, BatchNorm, ReLU, global max pooling, a linear head scaled by 0.125.

Input: RGB in [0, 1], 3x32x32, normalised per channel as ``(x - MEAN) / STD``; output: 10 logits
in the order of ``CLASSES`` (ImageFolder alphabetical order of the class folders).

Weights: ``weights/cifar10_cnn.pt`` (a float32 ``state_dict``), loaded with
``weights_only=True``. Which images of ``cifar10-train.tar`` were held aside (never trained on)
is listed in ``weights/cifar10_split.json``; evaluation must draw its images from that list.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
INPUT_SHAPE = (3, 32, 32)
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
WEIGHTS = Path(__file__).parent / "weights" / "cifar10_cnn.pt"
SPLIT = Path(__file__).parent / "weights" / "cifar10_split.json"


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class ResNet9(nn.Module):
    """Half-width ResNet-9: normalised [N,3,32,32] -> logits [N,10]."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w),
            _conv_bn(w, 2 * w, pool=True),
            _Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True),
            _conv_bn(4 * w, 8 * w, pool=True),
            _Residual(8 * w),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(8 * w, num_classes)
        self.scale = 0.125

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)) * self.scale


def build(pretrained: bool = True) -> nn.Module:
    """The CIFAR-10 model in eval mode.

    With ``pretrained=True`` the committed weights are loaded (``weights_only=True``) when the
    file exists; a missing file only warns and the model stays randomly initialised.
    ``pretrained=False``: random initialisation.
    """
    model = ResNet9(num_classes=len(CLASSES))
    if pretrained:
        if WEIGHTS.exists():
            state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        else:
            warnings.warn(f"{WEIGHTS} not found: CIFAR-10 model is UNTRAINED", stacklevel=2)
    return model.eval()
