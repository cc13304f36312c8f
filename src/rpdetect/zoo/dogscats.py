"""Dogs vs. cats classifier (paper Table 1): EfficientNet-Lite0 features + a trained linear head.

Backbone: the ImageNet-pretrained EfficientNet-Lite0 of :mod:`rpdetect.zoo.efficientnet_lite0`
(frozen, unchanged). Its 1000-way classifier is dropped: the 1280 channels of the last
convolution are averaged over space and fed to a 2-class linear head trained by
``benchmarks/train_dogscats.py`` (weights ``weights/dogscats_head.pt``, a ``state_dict`` of an
``nn.Linear(1280, 2)``). Classes: ``cats`` = 0, ``dogs`` = 1.

Input: normalised ``(x - 0.5) / 0.5`` RGB, 3x224x224, x in [0, 1]; output: 2 logits.

Image preparation (use :func:`prepare` / :func:`load_image` so training and evaluation agree):
decode with OpenCV, BGR -> RGB, resize so that the SHORTER side is 224 (``cv2.INTER_AREA``,
the other side rounded to the nearest integer), then center-crop 224x224 (offset
``(size - 224) // 2``), scale to float32 in [0, 1]. Normalisation is NOT applied by
:func:`prepare`; it belongs to the model input (``MEAN``/``STD``).

Held-aside images (never trained on) are listed in ``weights/dogscats_split.json``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
INPUT_SHAPE = (3, 224, 224)
CLASSES = ("cats", "dogs")
SIZE = 224
FEATURES = 1280
WEIGHTS = Path(__file__).parent / "weights" / "dogscats_head.pt"
SPLIT = Path(__file__).parent / "weights" / "dogscats_split.json"


def prepare(rgb: np.ndarray, size: int = SIZE) -> np.ndarray:
    """uint8 (or float) RGB HxWx3 -> float32 RGB size x size x 3 in [0, 1], prepared exactly
    as ``rpdetect detect`` prepares images (``rpdetect.engine.images``: the shorter side scaled
    to ``size``, INTER_AREA shrinking and INTER_LINEAR enlarging, then the centre crop)."""
    from ..engine.images import prepare_image

    # the engine reads integer images as HWC and float ones as CHW
    image = np.ascontiguousarray(rgb.transpose(2, 0, 1)) if np.issubdtype(
        rgb.dtype, np.floating) else rgb
    return np.ascontiguousarray(prepare_image(image, (size, size)).transpose(1, 2, 0))


def decode(data: bytes, *, source: str = "image data") -> np.ndarray:
    """JPEG/PNG bytes -> uint8 RGB HxWx3, decoded by the engine (``decode_image``)."""
    from ..engine.images import decode_image

    image = decode_image(data, source=source)
    return image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)


def load_image(path: str | Path, size: int = SIZE) -> np.ndarray:
    """Image file -> float32 RGB size x size x 3 in [0, 1] (see :func:`prepare`)."""
    return prepare(decode(Path(path).read_bytes(), source=str(path)), size)


def to_input(images: np.ndarray) -> torch.Tensor:
    """Prepared float RGB [N,H,W,3] (or [H,W,3]) in [0, 1] -> normalised tensor [N,3,H,W]."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.ndim == 3:
        x = x[None]
    x = x.permute(0, 3, 1, 2)
    return ((x - 0.5) / 0.5).contiguous()


class DogsCats(nn.Module):
    """EfficientNet-Lite0 features -> global average -> Linear(1280, 2)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(FEATURES, len(CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(pretrained: bool = True) -> nn.Module:
    """The dogs/cats model in eval mode (backbone always ImageNet-pretrained).

    ``pretrained=True`` loads the head from ``weights/dogscats_head.pt`` (``weights_only=True``);
    a missing file only warns (head stays random). ``pretrained=False``: random head.
    """
    from rpdetect.zoo import efficientnet_lite0

    backbone = efficientnet_lite0.build()
    backbone._fc = nn.Identity()  # unused; drops the 1000-way classifier from the state
    model = DogsCats(backbone)
    if pretrained:
        if WEIGHTS.exists():
            model.head.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        else:
            warnings.warn(f"{WEIGHTS} not found: dogs/cats head is UNTRAINED", stacklevel=2)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
