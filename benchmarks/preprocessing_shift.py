"""How much the Table 1 inputs moved when evaluation switched to the engine's preprocessing.

Until 2026-12-03 the evaluation prepared its own images: ImageNette stretched to 224x224
(INTER_AREA, aspect ratio lost), Dogs vs Cats scaled the shorter side to 224 with INTER_AREA in
both directions and centre-cropped. Since then every image goes through
``rpdetect.engine.images`` as ``rpdetect detect`` prepares it (``shorter-crop``: INTER_AREA
shrinks, INTER_LINEAR enlarges). CIFAR-10 images are 32x32 already and are untouched by both.

For the first ``--count`` evaluation images of each preset this prints how many prepared images
differ, by how much, and how often the zoo classifier's label is the same either way:

    python benchmarks/preprocessing_shift.py [--count 300] [--data DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib
import tarfile
from pathlib import Path

import cv2
import numpy as np
import torch

from rpdetect._atomic import atomic_write_text
from rpdetect.evaluation.datasets import TarImages, default_data_dir
from rpdetect.evaluation.pipeline import preset_split
from rpdetect.evaluation.presets import PRESETS


def old_imagenette(rgb: np.ndarray) -> np.ndarray:
    """rpdetect <= 0.2: ``resize_exact`` to 224x224 (INTER_AREA), float HWC in [0, 1]."""
    if rgb.shape[:2] != (224, 224):
        rgb = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)
    return rgb.astype(np.float32) / 255.0


def old_dogscats(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """rpdetect <= 0.2's ``rpdetect.zoo.dogscats.prepare``: shorter side to ``size`` with
    INTER_AREA (enlarging too), centre crop."""
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    top, left = (nh - size) // 2, (nw - size) // 2
    return rgb[top:top + size, left:left + size].astype(np.float32) / 255.0


OLD = {"imagenette": old_imagenette, "dogscats": old_dogscats}


def measure(name: str, data: Path, count: int) -> dict[str, float]:
    preset = PRESETS[name]
    zoo = importlib.import_module(f"rpdetect.zoo.{preset.zoo}")
    model = zoo.build().eval()
    mean = torch.tensor(zoo.MEAN).view(1, -1, 1, 1)
    std = torch.tensor(zoo.STD).view(1, -1, 1, 1)
    split = preset_split(preset, data / preset.tar, 0)
    members = [it.member for it in split.evaluation[:count]]
    with TarImages(data / preset.tar, zoo.INPUT_SHAPE) as new_reader, \
            tarfile.open(data / preset.tar) as tar:
        new = new_reader.read(members)
        old = []
        for m in members:
            raw = np.frombuffer(tar.extractfile(m).read(), np.uint8)  # type: ignore[union-attr]
            rgb = cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            old.append(OLD[name](rgb).transpose(2, 0, 1))
    old_a = np.stack(old)
    diff = np.abs(new - old_a).reshape(len(new), -1).max(axis=1)
    labels = []
    with torch.no_grad():
        for x in (old_a, new):
            out = [model((torch.from_numpy(x[i:i + 16]) - mean) / std).argmax(1).numpy()
                   for i in range(0, len(x), 16)]
            labels.append(np.concatenate(out))
    truth = np.array([it.label for it in split.evaluation[:count]])
    return {"images": len(new), "differ": float((diff > 1.5 / 255).mean()),
            "mean_abs": float(np.abs(new - old_a).mean()),
            "same_label": float((labels[0] == labels[1]).mean()),
            "accuracy_old": float((labels[0] == truth).mean()),
            "accuracy_new": float((labels[1] == truth).mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "preprocessing_shift.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = args.data or default_data_dir()
    lines = ["# Evaluation inputs before and after the engine's preprocessing", "",
             f"`python benchmarks/preprocessing_shift.py --count {args.count}`; the first "
             f"{args.count} evaluation images of each preset (split seed 0).", "",
             "| preset | images | prepared image differs (max abs > 1.5/255) | mean abs diff | "
             "same zoo label | accuracy before / after |", "|---|---|---|---|---|---|"]
    for name in OLD:
        r = measure(name, data, args.count)
        lines.append(f"| {name} | {r['images']} | {r['differ']:.1%} | {r['mean_abs']:.4f} | "
                     f"{r['same_label']:.1%} | {r['accuracy_old']:.3f} / "
                     f"{r['accuracy_new']:.3f} |")
        print(lines[-1], flush=True)
    lines += ["", "CIFAR-10 images are 32x32, the classifier's size: neither policy touches "
              "them, so its inputs did not move.", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
