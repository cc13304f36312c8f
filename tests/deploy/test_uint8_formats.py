"""uint8 frame inputs (input_format="uint8-nhwc-rgb"/"-bgr"): the graph's cast, channel order,
layout and scale give the float graph's outputs on the same picture."""

from __future__ import annotations

import numpy as np
import pytest

from rpdetect.testing import run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["uint8-nhwc-rgb", "uint8-nhwc-bgr"])
def test_uint8_graph_equals_float_graph(fmt, make_detector, image_hwc, image_float, noise):
    float_out = run(make_detector("input-float-nchw", noise="input", input_format="float-nchw"),
                    {"image": image_float, "noise": noise})
    frame = image_hwc[None] if fmt == "uint8-nhwc-rgb" else image_hwc[None, :, :, ::-1]
    u8_out = run(make_detector(f"input-{fmt}", noise="input", input_format=fmt),
                 {"image": np.ascontiguousarray(frame), "noise": noise})
    assert set(u8_out) == set(float_out)
    for name, want in float_out.items():
        assert u8_out[name].dtype == want.dtype and u8_out[name].shape == want.shape, name
        # Cast -> (Gather) -> Transpose -> / 255 in the graph is numpy's x / 255: measured 0.
        np.testing.assert_allclose(u8_out[name], want, rtol=1e-6, atol=0, err_msg=name)


def test_bgr_and_rgb_graphs_disagree_on_the_wrong_channel_order(make_detector, image_hwc,
                                                                 noise):
    """Feeding RGB bytes to the BGR graph is a different picture (the reorder is really there)."""
    rgb = run(make_detector("input-uint8-nhwc-rgb", noise="input", input_format="uint8-nhwc-rgb"),
              {"image": image_hwc[None], "noise": noise})
    bgr = run(make_detector("input-uint8-nhwc-bgr", noise="input", input_format="uint8-nhwc-bgr"),
              {"image": image_hwc[None], "noise": noise})
    assert not np.allclose(rgb["logits"], bgr["logits"], rtol=1e-4, atol=0)
