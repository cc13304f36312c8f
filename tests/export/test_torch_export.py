"""``torch_to_onnx`` refuses bad arguments before the (slow) export, naming the fix."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from rpdetect.export.torch_export import torch_to_onnx  # noqa: E402
from rpdetect.testing import torch_cnn  # noqa: E402


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"opset": 17}, "opset 17: use 18-21"),
        ({"opset": 22}, "cannot run RandomNormalLike from opset 22"),
        ({"input_shape": (3, 8)}, "expected C, H, W > 0"),
        ({"mean": (0.5, 0.5)}, "mean and std go together"),
        ({"mean": (0.5, 0.5), "std": (0.5, 0.5)}, "mean: expected 1 or 3 values, got 2"),
        ({"mean": (0.5,), "std": (0.0,)}, "std: values must be non-zero"),
    ],
)
def test_bad_arguments_are_refused_before_exporting(tmp_path, kw, message):
    out = tmp_path / "c.onnx"
    with pytest.raises(ValueError, match=message):
        torch_to_onnx(torch_cnn(3, 4, seed=0), out, **{"input_shape": (3, 8, 8), **kw})
    assert not out.exists()
