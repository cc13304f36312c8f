"""A stand-in classifier for benchmarks when no trained one is there.

``vgg11_cifar``: VGG-11-style CNN (8 conv layers with BatchNorm, 5 max-pools, one linear
layer) for 3x32x32 input, 10 classes, RANDOM weights (fixed seed). Its latency is what matters
here, not its accuracy; benchmark reports that use it say so.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VGG11_LAYERS", "vgg11_cifar"]

VGG11_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11_cifar(num_classes: int = 10, seed: int = 0) -> Any:
    """The module in eval mode; its input is normalised 3x32x32 images."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for spec in VGG11_LAYERS:
        if spec == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, int(spec), 3, padding=1), nn.BatchNorm2d(int(spec)),
                       nn.ReLU(inplace=True)]
            channels = int(spec)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, num_classes)).eval()
