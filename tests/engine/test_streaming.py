"""Issue 11, items 2 and 8: non-finite outputs are errors, never verdicts; ``detect`` streams its
results, keeps them on Ctrl-C, escapes file names and writes strict JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rpdetect import Detector
from rpdetect.cli import main
from rpdetect.engine.finite import NonFiniteError
from rpdetect.engine.stream import JsonStream, display_name, escape_controls
from rpdetect.export import DetectorConfig, build_detector, save_onnx

SRC = Path(__file__).resolve().parents[2] / "src"


def _strict(text: str):
    def refuse(token: str):
        raise ValueError(f"non-JSON token {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def log_detector(tmp_path_factory) -> Path:
    """Log(GlobalAveragePool(x)) -> Flatten -> MatMul: -inf logits on an all-black image."""
    w = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
         helper.make_node("Log", ["g"], ["l"]),
         helper.make_node("Flatten", ["l"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["y"])],
        "log_clf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(w, "w")])
    clf = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    det = build_detector(clf, DetectorConfig(noise="input", kappas=(0.01, 0.05)))
    return save_onnx(det, tmp_path_factory.mktemp("finite") / "log_det.onnx")


@pytest.fixture
def black_and_grey(tmp_path, tools) -> tuple[Path, Path]:
    black = tools.write_png(tmp_path / "black.png", np.zeros((32, 32, 3), np.uint8))
    grey = tools.write_png(tmp_path / "grey.png", np.full((32, 32, 3), 128, np.uint8))
    return black, grey


def test_nonfinite_logits_are_an_error_not_a_verdict(log_detector, black_and_grey):
    black, grey = black_and_grey
    det = Detector(log_detector, seed=0)
    with pytest.raises(NonFiniteError, match=r"black.png: the classifier gave non-finite values "
                                             r"\(logits 10 of 10"):
        det.detect(str(black))
    assert np.isfinite(det.detect(str(grey)).score1_max)
    report = det.detect_many([str(black), str(grey)], progress=False)
    assert [r.source for r in report.results] == [str(grey)]
    (failure,) = report.failures
    assert failure.index == 0 and "non-finite" in failure.error


def test_nonfinite_through_the_cli(log_detector, black_and_grey, capsys):
    black, grey = black_and_grey
    assert main(["detect", str(log_detector), str(black), str(grey), "--seed", "0"]) == 1
    out, err = capsys.readouterr()
    assert "black.png" not in out and out.count("\n") == 1
    assert "black.png: the classifier gave non-finite values" in err
    assert "1 input(s) failed, 1 done" in err
    assert main(["detect", str(log_detector), str(black), str(grey), "--json", "--logits"]) == 1
    doc = _strict(capsys.readouterr().out)
    assert [r["source"] for r in doc["results"]] == [str(grey)]
    assert "non-finite" in doc["failures"][0]["error"]


def test_detect_many_keeps_input_order_with_a_batch(det_input_b3, tmp_path, tools):
    paths = []
    for i in range(7):
        p = tmp_path / f"{i}.png"
        if i in (1, 5):
            p.write_bytes(b"")
        else:
            tools.write_png(p, tools.rgb_image(i))
        paths.append(str(p))
    det = Detector(det_input_b3, seed=0)
    stream = list(det.detect_iter(paths))
    assert [getattr(o, "source") for o in stream] == paths
    report = det.detect_many(paths, progress=False)
    assert [f.index for f in report.failures] == [1, 5] and len(report.results) == 5


def test_names_are_escaped():
    forged = "a.png\tlabel=3\tscore1_max=9\tscore2_max=9\tADVERSARIAL\nb.png"
    shown = display_name(forged)
    assert "\n" not in shown and "\t" not in shown and shown.startswith("'a.png\\t")
    assert display_name("\x1b[31mred.png") == "'\\x1b[31mred.png'"
    assert display_name("plain é.png") == "plain é.png"
    assert escape_controls("x\u202ey") == "x\\u202ey"


def test_forged_file_name_cannot_forge_a_line(det_input, tmp_path, tools, capsys):
    forged = tmp_path / "a.png\tlabel=3\tscore1_max=9\tscore2_max=9\tADVERSARIAL\n\x1b[31mb.png"
    tools.write_png(forged, tools.rgb_image(0))
    bad = tmp_path / "bad\n\x1b[2Jname.png"
    bad.write_bytes(b"")
    assert main(["detect", str(det_input), str(forged), str(bad), "--no-progress"]) == 1
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.endswith("\tclean") and line.count("\t") == 5 and "\x1b" not in line  # flips=
    assert "\x1b" not in err and "bad\\n\\x1b[2Jname.png: empty file" in err
    assert main(["detect", str(det_input), str(forged), "--json"]) == 0
    assert _strict(capsys.readouterr().out)["results"][0]["source"] == str(forged)


def test_json_stream_is_valid_when_empty_or_interrupted(tmp_path):
    import io
    for count, interrupted in ((0, False), (2, True)):
        buf = io.StringIO()
        stream = JsonStream(buf, {"model": "m"})
        for i in range(count):
            stream.result({"source": str(i), "score1_max": 0.5})
        stream.close([{"index": None, "source": "x", "error": "e"}], interrupted=interrupted)
        doc = _strict(buf.getvalue())
        assert len(doc["results"]) == count and doc["failures"][0]["error"] == "e"
        assert doc.get("interrupted", False) is interrupted
    with pytest.raises(ValueError):
        JsonStream(io.StringIO(), {"model": "m"}).result({"score1_max": float("nan")})


_SLOW_DETECT = textwrap.dedent("""
    import sys, time
    import signal
    # a shell that starts jobs in the background (CI, nohup) hands them SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: restore the interactive behaviour
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from rpdetect.engine.detector import Detector
    from rpdetect.cli import main

    run = Detector._run
    def slow_run(self, *args, **kwargs):
        out = run(self, *args, **kwargs)
        time.sleep(0.3)  # a big model: results come one by one
        return out
    Detector._run = slow_run
    sys.exit(main(sys.argv[1:]))
""")


def test_detect_streams_and_ctrl_c_keeps_what_was_printed(det_input, tmp_path, tools):
    images = [tools.write_png(tmp_path / f"{i:03d}.png", tools.rgb_image(i)) for i in range(40)]
    argv = ["detect", str(det_input), *map(str, images), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_DETECT, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        first = proc.stdout.readline()  # printed while 39 images are still to come
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert rc == 130, proc.stderr.read()
    assert "interrupted after" in proc.stderr.read()
    lines = (first + rest).splitlines()
    assert lines[0].startswith(str(images[0])) and 1 <= len(lines) < 40


def test_interrupted_json_is_one_valid_document(det_input, tmp_path, tools):
    images = [tools.write_png(tmp_path / f"{i:03d}.png", tools.rgb_image(i)) for i in range(40)]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_DETECT, "detect", str(det_input),
                             *map(str, images), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        head = ""
        while '"source"' not in head:
            head += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        head += proc.stdout.read()
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
    doc = _strict(head)
    assert rc == 130 and doc["interrupted"] is True and 1 <= len(doc["results"]) < 40


def test_finiteness_check_is_exact_on_huge_finite_values_and_names_what_is_not():
    from types import SimpleNamespace

    from rpdetect.engine.finite import nonfinite_message

    def result(**over):
        base = dict(logits=np.full(4, 3e38, np.float32), score1=np.ones(3, np.float32),
                    score2=np.ones(3, np.float32), score1_max=1.0, score2_max=1.0, source="x")
        return SimpleNamespace(**{**base, **over})

    assert nonfinite_message(result()) is None  # sums to 1.2e39 in float64: still finite
    # float64 values whose sum overflows are finite too: the exact check says so
    assert nonfinite_message(result(logits=np.full(2, 1.5e308))) is None
    msg = nonfinite_message(result(score2=np.array([1.0, np.nan, np.inf], np.float32)))
    assert msg is not None and "score2 2 of 3 NaN/+inf" in msg and "logits" not in msg
