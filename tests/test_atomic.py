"""Atomic writes and output checks (issue 11, items 1 and 7): a failed or interrupted write never
costs the previous file, and outputs that cannot be written fail before any work."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from rpdetect._atomic import atomic_path, atomic_write_text, check_output
from rpdetect.cli import main
from rpdetect.errors import OutputError
from rpdetect.export import DetectorConfig, build_detector, save_onnx
from rpdetect.testing import plain_classifier

SRC = Path(__file__).resolve().parents[1] / "src"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".rpdetect-"))


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    path = tmp_path / "clf.onnx"
    onnx.save(plain_classifier(), str(path))
    return path


def test_enospc_leaves_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "det.onnx"
    target.write_bytes(b"the good detector")

    def full_disk(model, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full_disk)
    with pytest.raises(OutputError, match="No space left on device.*previous file.*intact"):
        save_onnx(build_detector(plain_classifier()), target)
    assert target.read_bytes() == b"the good detector"
    assert _leftovers(tmp_path) == []


def test_enospc_through_the_cli_exits_2(tmp_path, classifier, monkeypatch, capsys):
    target = tmp_path / "det.onnx"
    target.write_bytes(b"the good detector")

    def full_disk(model, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full_disk)
    assert main(["export", str(classifier), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free some disk space" in err
    assert target.read_bytes() == b"the good detector" and _leftovers(tmp_path) == []


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A real 1 MiB tmpfs (root only, where mount works)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk_keeps_the_good_detector(small_tmpfs, capsys):
    good = save_onnx(build_detector(plain_classifier()), small_tmpfs / "det.onnx")
    before = good.read_bytes()
    big = small_tmpfs.parent / "big.onnx"
    onnx.save(plain_classifier(size=32, classes=40_000), str(big))  # ~2.6 MB of weights
    assert main(["export", str(big), "-o", str(good)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert good.read_bytes() == before and _leftovers(small_tmpfs) == []


_INTERRUPTED_SAVE = textwrap.dedent("""
    import sys, time
    import signal
    # a shell that starts jobs in the background (CI, nohup) hands them SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: restore the interactive behaviour
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from pathlib import Path
    import onnx
    from rpdetect.cli import main

    def slow_save(model, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        print("ready", flush=True)
        time.sleep(60)

    onnx.save = slow_save
    sys.exit(main(sys.argv[1:]))
""")


def test_sigint_during_save_keeps_the_old_file(tmp_path, classifier):
    target = tmp_path / "det.onnx"
    target.write_bytes(b"the good detector")
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_SAVE, "export", str(classifier), "-o", str(target)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert _leftovers(tmp_path)  # the temporary file exists while the save runs
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert rc == 130, proc.stderr.read()
    assert target.read_bytes() == b"the good detector"
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_in_the_python_api_removes_the_temp(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and _leftovers(tmp_path) == []
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _leftovers(tmp_path) == []


def test_new_files_get_the_usual_mode(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.fixture
def readonly_dir(tmp_path: Path):
    """A folder nobody may write in: chmod where that binds us, else a read-only tmpfs."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        yield folder
        folder.chmod(0o755)
        return
    folder.chmod(0o755)  # root ignores modes: mount a read-only file system instead
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("no way to make a read-only folder here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_check_output_names_each_problem(tmp_path, classifier, readonly_dir):
    (tmp_path / "dir.onnx").mkdir()
    cases = {
        tmp_path / "dir.onnx": "is a folder",
        tmp_path / "missing" / "x.onnx": "does not exist; create it first",
        tmp_path / ("n" * 300 + ".onnx"): "the name is 305 bytes",
        readonly_dir / "x.onnx": "cannot write in",
        classifier: "is the input file",
    }
    for path, message in cases.items():
        with pytest.raises(OutputError, match=message):
            check_output(path, inputs=[classifier])
    assert not (tmp_path / "missing").exists()  # never created
    assert check_output(tmp_path / "fine.onnx") == tmp_path / "fine.onnx"
    assert _leftovers(tmp_path) == []


def test_export_refuses_to_overwrite_its_input(classifier, capsys):
    before = classifier.read_bytes()
    assert main(["export", str(classifier), "-o", str(classifier)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert classifier.read_bytes() == before


@pytest.fixture
def calibration_inputs(tmp_path):
    det = save_onnx(build_detector(plain_classifier(), DetectorConfig(kappas=(0.05,))),
                    tmp_path / "det.onnx")
    images = tmp_path / "clean"
    images.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(images / f"{i}.png"), np.full((32, 32, 3), 40 * i, np.uint8))
    return det, images


def test_calibrate_outputs_fail_before_any_image_is_scored(
        tmp_path, calibration_inputs, readonly_dir, monkeypatch, capsys):
    from rpdetect.engine import Detector

    def no_scoring(*args, **kwargs):
        raise AssertionError("an image was scored before the output was checked")

    monkeypatch.setattr(Detector, "detect_many", no_scoring)
    det, images = calibration_inputs
    (tmp_path / "existing_dir.onnx").mkdir()
    cases = [
        (["-o", str(tmp_path / "existing_dir.onnx")], "is a folder"),
        (["-o", str(readonly_dir / "cal.onnx")], "cannot write in"),
        (["-o", str(tmp_path / ("c" * 260 + ".onnx"))], "choose a shorter name"),
        (["-o", str(tmp_path / "cal.onnx"), "--report", "/nonexistent/dir/r.json"],
         "folder /nonexistent/dir does not exist"),
        (["-o", str(det)], "is the input file"),
        (["-o", str(tmp_path / "cal.onnx"), "--report", str(tmp_path / "cal.onnx")],
         "is also the output"),
    ]
    for extra, message in cases:
        start = time.perf_counter()
        rc = main(["calibrate", str(det), "--images", str(images), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and "Traceback" not in err, (extra, err)
        assert time.perf_counter() - start < 10
    assert not Path("/nonexistent").exists()
