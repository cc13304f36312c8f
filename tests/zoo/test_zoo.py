"""Fast checks of the classifiers we train ourselves (no training here)."""

from __future__ import annotations

import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from rpdetect.errors import InputError  # noqa: E402
from rpdetect.zoo import cifar10_cnn, dogscats  # noqa: E402

DATA = Path(__file__).parents[2].parent / "shared" / "data"


def _need(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} absent")
    return path


def _need_weights(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path.name} not trained yet")


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_build_random_shape():
    model = cifar10_cnn.build(pretrained=False)
    assert not model.training
    with torch.no_grad():
        out = model(torch.randn(3, *cifar10_cnn.INPUT_SHAPE))
    assert out.shape == (3, len(cifar10_cnn.CLASSES)) == (3, 10)


def test_cifar10_constants():
    assert cifar10_cnn.INPUT_SHAPE == (3, 32, 32)
    assert len(cifar10_cnn.MEAN) == len(cifar10_cnn.STD) == 3
    assert list(cifar10_cnn.CLASSES) == sorted(cifar10_cnn.CLASSES)


def test_cifar10_weights_load_weights_only():
    _need_weights(cifar10_cnn.WEIGHTS)
    state = torch.load(cifar10_cnn.WEIGHTS, map_location="cpu", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert cifar10_cnn.WEIGHTS.stat().st_size < 20e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = cifar10_cnn.build()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_cifar10_split_json():
    _need_weights(cifar10_cnn.SPLIT)
    split = json.loads(cifar10_cnn.SPLIT.read_text())
    held = split["held_aside"]
    assert len(held) == len(set(held)) == split["n_held_aside"] == 5000
    classes = [Path(n).parts[-2] for n in held]
    assert all(classes.count(c) == 500 for c in cifar10_cnn.CLASSES)


def _read_tar_members(tar_path: Path, wanted: set[str]) -> dict[str, bytes]:
    """Regular files named in ``wanted`` from an uncompressed ustar archive.

    A direct header walk over the bytes: ``tarfile`` needs ~4-20 s to iterate the 50,000
    CIFAR members on a busy 2-core machine, this takes well under a second.
    """
    data = tar_path.read_bytes()
    found: dict[str, bytes] = {}
    pos = 0
    while pos + 512 <= len(data) and len(found) < len(wanted):
        header = data[pos : pos + 512]
        if header == b"\0" * 512:
            break
        name = header[0:100].split(b"\0", 1)[0].decode()
        prefix = header[345:500].split(b"\0", 1)[0].decode() if header[257:262] == b"ustar" else ""
        if prefix:
            name = f"{prefix}/{name}"
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        if header[156:157] in (b"0", b"\0") and name in wanted:
            found[name] = data[pos + 512 : pos + 512 + size]
        pos += 512 + (size + 511) // 512 * 512
    if len(found) < len(wanted):  # unusual archive (pax/GNU long names): slow, safe path
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.name in wanted and m.name not in found:
                    found[m.name] = tar.extractfile(m).read()
    return found


def _cifar_held_subset(n_per_class: int):
    tar_path = _need("cifar10-train.tar")
    split = json.loads(cifar10_cnn.SPLIT.read_text())
    by_class: dict[str, list[str]] = {}
    for name in split["held_aside"]:
        by_class.setdefault(Path(name).parts[-2], []).append(name)
    pick = {n for c in cifar10_cnn.CLASSES for n in sorted(by_class[c])[:n_per_class]}
    imgs, labels = [], []
    for name, raw in sorted(_read_tar_members(tar_path, pick).items()):
        buf = np.frombuffer(raw, dtype=np.uint8)
        imgs.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        labels.append(cifar10_cnn.CLASSES.index(Path(name).parts[-2]))
    assert len(imgs) == len(pick)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(cifar10_cnn.MEAN).view(1, 3, 1, 1)) / torch.tensor(cifar10_cnn.STD).view(
        1, 3, 1, 1
    )
    return x, torch.tensor(labels)


@pytest.mark.data
def test_cifar10_held_aside_accuracy():
    # the issue's bar, on all 5,000 held-aside images (the weights' JSON records 0.8922)
    _need_weights(cifar10_cnn.WEIGHTS)
    x, y = _cifar_held_subset(500)
    assert len(y) == 5000
    model = cifar10_cnn.build()
    with torch.no_grad():
        acc = sum((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
                  for i in range(0, len(y), 500)) / len(y)
    assert acc >= 0.88, acc
    recorded = json.loads(cifar10_cnn.WEIGHTS.with_suffix(".json").read_text())["held_aside_acc"]
    assert acc == pytest.approx(recorded, abs=1e-3)


# ---------------------------------------------------------------- dogs vs cats


def test_dogscats_prepare_policy():
    rgb = np.zeros((256, 341, 3), np.uint8)
    rgb[:, 170] = 255  # a column at the centre survives the centre crop
    out = dogscats.prepare(rgb)
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    cols = np.flatnonzero(out[0, :, 0] > 0.1)  # 341*224/256 = 298 wide, crop offset 37
    assert cols.min() >= 108 and cols.max() <= 116, cols
    assert out[:, 100:124].sum() > 0.5 * 224 and out[:, :100].max() == 0.0
    tall = dogscats.prepare(np.full((400, 224, 3), 128, np.uint8))
    assert tall.shape == (224, 224, 3)
    x = dogscats.to_input(out)
    assert x.shape == (1, 3, 224, 224) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_dogscats_load_image_names_a_file_it_cannot_decode(tmp_path):
    for name, data in (("empty.jpg", b""), ("text.jpg", b"not a jpeg")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError, match=f"{path}: (empty file|not an image OpenCV can decode)"):
            dogscats.load_image(path)


def test_dogscats_build_shape():
    model = dogscats.build(pretrained=False)
    assert not model.training
    with torch.no_grad():
        out = model(torch.randn(2, *dogscats.INPUT_SHAPE))
    assert out.shape == (2, 2)


def test_dogscats_weights_load_weights_only():
    _need_weights(dogscats.WEIGHTS)
    state = torch.load(dogscats.WEIGHTS, map_location="cpu", weights_only=True)
    assert state["weight"].shape == (2, dogscats.FEATURES) and state["bias"].shape == (2,)
    split = json.loads(dogscats.SPLIT.read_text())
    held = split["held_aside"]
    assert len(held) == len(set(held)) == 500
    assert sum("/cats/" in n for n in held) == sum("/dogs/" in n for n in held) == 250


@pytest.mark.data
def test_dogscats_held_aside_accuracy():
    _need_weights(dogscats.WEIGHTS)
    tar_path = _need("dogscats-train.tar")
    held = json.loads(dogscats.SPLIT.read_text())["held_aside"]
    pick = set(sorted(n for n in held if "/cats/" in n)[:10] + sorted(n for n in held if "/dogs/" in n)[:10])
    imgs, labels = [], []
    for name, raw in sorted(_read_tar_members(tar_path, pick).items()):
        imgs.append(dogscats.prepare(dogscats.decode(raw)))
        labels.append(dogscats.CLASSES.index(Path(name).parts[-2]))
    model = dogscats.build()
    with torch.no_grad():
        pred = model(dogscats.to_input(np.stack(imgs))).argmax(1).numpy()
    assert (pred == np.asarray(labels)).mean() >= 0.9
