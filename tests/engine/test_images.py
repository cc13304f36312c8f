"""The input policy of ``rpdetect.engine.images``: decoding, channels, dtypes, sizes, bad inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rpdetect.engine.images import load_image, prepare_image
from rpdetect.errors import InputError

S = (32, 32)


def test_png_is_decoded_as_rgb_and_scaled_by_255(tmp_path, tools):
    rgb = tools.rgb_image(0)
    out = load_image(tools.write_png(tmp_path / "a.png", rgb), S)
    assert out.dtype == np.float32 and out.shape == (3, 32, 32)
    np.testing.assert_array_equal(out, rgb.transpose(2, 0, 1).astype(np.float32) / 255)


def test_grayscale_is_replicated_and_alpha_dropped(tmp_path, tools):
    rgb = tools.rgb_image(1)
    gray = rgb[:, :, 0]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    want_gray = np.repeat(gray[None].astype(np.float32) / 255, 3, axis=0)
    want_rgb = rgb.transpose(2, 0, 1).astype(np.float32) / 255
    for item, want in [
        (tools.write_png(tmp_path / "g.png", gray), want_gray),
        (gray, want_gray),
        (gray[:, :, None], want_gray),
        (tools.write_png(tmp_path / "rgba.png", rgba), want_rgb),
        (rgba, want_rgb),
    ]:
        np.testing.assert_array_equal(load_image(item, S), want)


def test_16_bit_png_is_scaled_by_65535(tmp_path, tools):
    rgb16 = np.random.default_rng(2).integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    out = load_image(tools.write_png(tmp_path / "deep.png", rgb16), S)
    np.testing.assert_array_equal(out, rgb16.transpose(2, 0, 1).astype(np.float32) / 65535)


def test_channel_order_applies_to_integer_arrays(tools):
    rgb = tools.rgb_image(3)
    np.testing.assert_array_equal(load_image(rgb[:, :, ::-1].copy(), S, channel_order="bgr"),
                                  load_image(rgb, S))


def test_float_chw_passes_through_and_other_floats_are_cast():
    x = np.random.default_rng(4).random((3, 32, 32))
    np.testing.assert_array_equal(load_image(x, S), x.astype(np.float32))
    np.testing.assert_array_equal(load_image(x.astype(np.float16), S),
                                  x.astype(np.float16).astype(np.float32))


def test_rgb_becomes_luma_for_one_channel_detectors(tools):
    rgb = tools.rgb_image(5)
    out = load_image(rgb, S, channels=1)
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)[None] / 255
    np.testing.assert_array_equal(out, want)


def _three_bands() -> np.ndarray:
    """32x64 RGB: red | green | blue vertical bands of widths 16, 32, 16."""
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :16, 0] = 255
    img[:, 16:48, 1] = 255
    img[:, 48:, 2] = 255
    return img


def test_resize_policies():
    img = _three_bands()
    crop = load_image(img, S)  # shorter side 32 already: the centre 32 columns, all green
    np.testing.assert_array_equal(crop, np.stack([np.zeros(S), np.ones(S), np.zeros(S)]))
    stretch = load_image(img, S, resize="stretch")
    assert stretch.shape == (3, 32, 32)
    assert stretch[0, :, 0].min() == 1.0 and stretch[2, :, -1].min() == 1.0  # red left, blue right
    small = load_image(img[:16, :32], (32, 32))  # grown, then cropped
    assert small.shape == (3, 32, 32)
    with pytest.raises(InputError, match=r"size 32x64 \(HxW\), the detector needs 32x32"):
        load_image(img, S, resize="none")
    big = np.random.default_rng(0).random((3, 100, 80))
    out = load_image(big, (24, 20), resize="shorter-crop")
    assert out.shape == (3, 24, 20) and 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros(32, np.uint8), "rank 1"),
        (np.zeros((2, 32, 32, 3), np.uint8), "rank 4"),
        (np.zeros((1, 3, 32, 32), np.float32), "rank 4"),
        (np.zeros((32, 32, 2), np.uint8), "2 channels"),
        (np.zeros((3, 32, 32), np.uint8), r"looks CHW.*transpose\(1, 2, 0\)"),
        (np.zeros((32, 32, 3), np.float32), r"looks HWC.*transpose\(2, 0, 1\)"),
        (np.zeros((5, 32, 32), np.float32), "5 channels"),
        (np.zeros((32, 32, 3), np.int32), "unsupported dtype int32"),
        (np.zeros((32, 32, 3), bool), "unsupported dtype bool"),
        (np.zeros((0, 32, 3), np.uint8), "empty image"),
    ],
)
def test_bad_arrays_say_what_is_wrong(array, message):
    with pytest.raises(InputError, match=message) as err:
        prepare_image(array, S, source="array[7]")
    assert str(err.value).startswith("array[7]: ")


def test_non_finite_and_out_of_range_floats():
    x = np.full((3, 32, 32), 0.5, np.float32)
    x[1, 2, 3] = np.nan
    with pytest.raises(InputError, match=r"1 NaN/Inf value\(s\) \(first at index \(1, 2, 3\)\)"):
        load_image(x, S)
    x[1, 2, 3] = np.inf
    with pytest.raises(InputError, match="NaN/Inf"):
        load_image(x, S)
    x[1, 2, 3] = 1.5
    x[0, 0, 0] = -0.25
    with pytest.raises(InputError, match=r"observed range \[-0.25, 1.5\]"):
        load_image(x, S)
    with pytest.raises(InputError, match="divide by 255"):
        load_image(np.full((3, 32, 32), 200.0), S)


def test_channel_mismatch_with_the_detector():
    with pytest.raises(InputError, match="1 channel"):
        load_image(np.zeros((32, 32), np.uint8), S, channels=2)


@pytest.fixture
def bad_files(tmp_path, tools):
    png = tools.write_png(tmp_path / "ok.png", tools.rgb_image(6))
    ok, jpg = cv2.imencode(".jpg", tools.rgb_image(7))
    data_png, data_jpg = png.read_bytes(), jpg.tobytes()
    files = {
        "empty": (tmp_path / "empty.png", b"", "empty file"),
        "truncated jpeg": (tmp_path / "cut.jpg", data_jpg[:-2], "truncated JPEG"),
        "half jpeg": (tmp_path / "half.jpg", data_jpg[: len(data_jpg) // 2], "truncated JPEG"),
        "truncated png": (tmp_path / "cut.png", data_png[:-10], "truncated PNG"),
        "text": (tmp_path / "notes.jpg", b"just some text\n", "not an image OpenCV can decode"),
    }
    for path, data, _ in files.values():
        path.write_bytes(data)
    return files


@pytest.mark.parametrize("kind", ["empty", "truncated jpeg", "half jpeg", "truncated png", "text"])
def test_bad_files_name_the_file(bad_files, kind):
    path, _, message = bad_files[kind]
    with pytest.raises(InputError, match=message) as err:
        load_image(path, S)
    assert str(path) in str(err.value)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png", S)
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path, S)
    with pytest.raises(InputError, match="expected a file path"):
        load_image([[0.5]], S)  # type: ignore[arg-type]


def test_float_tiff_is_checked_like_float_arrays(tmp_path):
    x = np.random.default_rng(8).random((32, 32, 3)).astype(np.float32)
    assert cv2.imwrite(str(tmp_path / "f.tiff"), x)
    np.testing.assert_array_equal(load_image(tmp_path / "f.tiff", S),
                                  x[:, :, ::-1].transpose(2, 0, 1))  # stored as BGR
    x[0, 0, 0] = 3.0
    assert cv2.imwrite(str(tmp_path / "g.tiff"), x)
    with pytest.raises(InputError, match="observed range"):
        load_image(tmp_path / "g.tiff", S)


def test_uint8_layout_for_uint8_graphs(tools):
    rgb = tools.rgb_image(9)
    np.testing.assert_array_equal(prepare_image(rgb, S, layout="uint8-hwc"), rgb)
    np.testing.assert_array_equal(
        prepare_image(rgb.transpose(2, 0, 1) / 255.0, S, layout="uint8-hwc"), rgb)
    np.testing.assert_array_equal(
        prepare_image(rgb.astype(np.uint16) * 257, S, layout="uint8-hwc"), rgb)


def test_file_depths_other_than_8_16_bit_and_float(tmp_path):
    """Signed/32-bit integer files are refused by name; float64 files read like float32 ones
    (OpenCV's cvtColor handles neither, so the BGR -> RGB swap must not depend on it)."""
    x = np.random.default_rng(10).random((32, 32, 3))
    assert cv2.imwrite(str(tmp_path / "f64.tiff"), x)
    np.testing.assert_array_equal(load_image(tmp_path / "f64.tiff", S),
                                  x[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))
    for dtype in (np.int16, np.int32):
        path = tmp_path / f"{np.dtype(dtype).name}.tiff"
        assert cv2.imwrite(str(path), np.ones((32, 32, 3), dtype))
        with pytest.raises(InputError, match=f"decoded as {np.dtype(dtype).name}") as err:
            load_image(path, S)
        assert str(path) in str(err.value)
