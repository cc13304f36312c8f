"""Fixtures: classifiers exported from tiny torch CNNs (dynamo exporter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpdetect.testing import torch_cnn


@pytest.fixture(scope="session")
def torch_classifier_32(tmp_path_factory) -> Path:
    from rpdetect.export.torch_export import torch_to_onnx

    path = tmp_path_factory.mktemp("cls") / "cnn32.onnx"
    return torch_to_onnx(torch_cnn(3, 10, seed=1), path, input_shape=(3, 32, 32),
                         mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


@pytest.fixture(scope="session")
def torch_classifier_224(tmp_path_factory) -> Path:
    from rpdetect.export.torch_export import torch_to_onnx

    path = tmp_path_factory.mktemp("cls") / "cnn224.onnx"
    return torch_to_onnx(torch_cnn(3, 1000, seed=2), path, input_shape=(3, 224, 224),
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
