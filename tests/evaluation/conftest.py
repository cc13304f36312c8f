"""A tiny CNN fitted to Foolbox's 20 bundled CIFAR-10 test images (lossless PNGs in the wheel),
for end-to-end runs that must stay fast: trained with pixel noise so that its clean images are
stable under the detector's copies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def foolbox_cifar10() -> tuple[np.ndarray, np.ndarray]:
    import cv2

    fb = pytest.importorskip("foolbox")

    folder = Path(fb.__file__).parent / "data"
    files = sorted(folder.glob("cifar10_*.png"))
    if len(files) < 20:
        pytest.skip(f"Foolbox's CIFAR-10 samples are missing in {folder}")
    images = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    labels = np.array([int(re.match(r"cifar10_\d+_(\d+)", f.stem).group(1)) for f in files])
    return images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, labels


def train_tiny_cnn(images: np.ndarray, labels: np.ndarray) -> Any:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(32, 10),
    )
    x = (torch.as_tensor(images) - 0.5) / 0.25
    y = torch.as_tensor(labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        noisy = x + 0.1 / 0.25 * torch.randn(x.shape, generator=gen)
        loss = torch.nn.functional.cross_entropy(model(noisy), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def cifar_samples() -> tuple[np.ndarray, np.ndarray]:
    """Foolbox's 20 CIFAR-10 test images [20, 3, 32, 32] in [0, 1] and their labels."""
    return foolbox_cifar10()


@pytest.fixture(scope="session")
def tiny_cifar(cifar_samples) -> tuple[np.ndarray, np.ndarray, Any]:
    """Foolbox's 20 CIFAR-10 images, their labels, and the tiny CNN fitted to them."""
    images, labels = cifar_samples
    return images, labels, train_tiny_cnn(images, labels)
