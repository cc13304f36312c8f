"""``rpdetect._cli_util``: the argument types and session options the units' CLIs share."""

from __future__ import annotations

import argparse

import pytest

from rpdetect._cli_util import add_session_args, float_list, session_kwargs, shape


def test_lists_and_shapes_parse_with_spaces_and_x():
    assert float_list("0.485, 0.456,0.406") == (0.485, 0.456, 0.406)
    assert shape("3,224,224") == shape("3x224x224") == (3, 224, 224)


@pytest.mark.parametrize(
    "parse, text, message",
    [
        (float_list, "0.5,abc", "expected comma-separated numbers, got '0.5,abc'"),
        (float_list, " , ", "got nothing"),
        (shape, "3,2.5,2", "expected integers like 3,224,224"),
        (shape, "", "got nothing"),
    ],
)
def test_bad_lists_are_usage_errors(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def _session(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_session_args(parser)
    return session_kwargs(parser.parse_args(argv))


def test_session_options_become_detector_keywords():
    assert _session([]) == {"providers": "auto", "threads": None}
    assert _session(["--providers", "cuda, cpu", "--threads", "2", "--provider-option",
                     "device_id=1", "--provider-option", " trt_fp16_enable = 1"]) == {
        "providers": ["cuda", "cpu"], "threads": 2, "device_id": "1", "trt_fp16_enable": "1"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--provider-option", "device_id=0", "--provider-option", "device_id=1"],
         "'device_id' is given twice"),
        (["--provider-option", "threads=2"], "'threads' is given twice"),
    ],
)
def test_conflicting_provider_options_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        _session(argv)


@pytest.mark.parametrize("argv", [["--providers", ","], ["--provider-option", "=1"],
                                  ["--provider-option", "device_id"]])
def test_bad_session_options_are_usage_errors(argv):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_session_args(parser)
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(argv)
