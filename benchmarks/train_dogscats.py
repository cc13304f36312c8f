"""Train the 2-class head of ``rpdetect.zoo.dogscats`` (paper Table 1) on CPU.

Data: ``dogscats-train.tar`` (2,000 JPEGs, ``dogscats-train/{cats,dogs}/<file>``, shorter side
256). Images are prepared with ``rpdetect.zoo.dogscats.prepare`` (shorter side -> 224, center
crop 224) and passed once through the frozen ImageNet-pretrained EfficientNet-Lite0 backbone;
the 1280-d pooled features are cached in the workdir (``--resume`` reuses the cache, also a
partial one). A multinomial logistic regression (``nn.Linear(1280, 2)``, L2 penalty
``--l2`` on the weight, full-batch L-BFGS for ``--epochs`` iterations) is trained on them.

Held-aside split (never trained on): per class (cats, dogs), file names sorted, permuted with
one ``numpy.random.default_rng(0)``, first 250 held aside: 500 images. Listed in
``src/rpdetect/zoo/weights/dogscats_split.json``.

Output: ``src/rpdetect/zoo/weights/dogscats_head.pt`` (float32 state_dict of the head) and the
provenance JSON ``dogscats_head.json``.

Usage (from the repository root)::

    nice -n 15 .venv/bin/python benchmarks/train_dogscats.py --resume
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import shlex
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from _trainlog import open_log  # noqa: E402  (benchmarks/, the script's folder)
from rpdetect.zoo import dogscats, sha256_file  # noqa: E402

SPLIT_SEED = 0
HELD_PER_CLASS = 250


def list_tar(tar_path: Path) -> tuple[list[str], np.ndarray]:
    with tarfile.open(tar_path) as tar:
        names = sorted(
            m.name for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")
        )
    labels = np.asarray([dogscats.CLASSES.index(Path(n).parts[-2]) for n in names], dtype=np.int64)
    return names, labels


def held_aside_mask(names: list[str], labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(SPLIT_SEED)
    held = np.zeros(len(names), dtype=bool)
    for c in range(len(dogscats.CLASSES)):
        idx = np.asarray(sorted((i for i in range(len(names)) if labels[i] == c), key=names.__getitem__))
        held[idx[rng.permutation(len(idx))[:HELD_PER_CLASS]]] = True
    return held


def extract_features(tar_path: Path, names: list[str], cache: Path, resume: bool, log, bs: int = 25):
    """[N,1280] float32 features, computed in chunks and saved after each (resumable)."""
    model = dogscats.build(pretrained=False)
    feats = torch.zeros(len(names), dogscats.FEATURES)
    done, spent = 0, 0.0
    if resume and cache.exists():
        ck = torch.load(cache, map_location="cpu", weights_only=True)
        if ck["names_sha"] == _names_sha(names):
            feats, done = ck["features"], int(ck["done"])
            spent = float(ck.get("extract_s", float("nan")))
            log(f"feature cache: {done}/{len(names)} done")
    if done >= len(names):
        return feats, spent
    t0 = time.time() - spent
    with tarfile.open(tar_path) as tar, torch.no_grad():
        for start in range(done, len(names), bs):
            chunk = names[start : start + bs]
            imgs = np.stack([dogscats.prepare(dogscats.decode(tar.extractfile(n).read())) for n in chunk])
            feats[start : start + len(chunk)] = model.features(dogscats.to_input(imgs))
            done = start + len(chunk)
            ck = {
                "features": feats,
                "done": done,
                "names_sha": _names_sha(names),
                "extract_s": time.time() - t0,
            }
            torch.save(ck, cache.with_suffix(".tmp"))
            cache.with_suffix(".tmp").replace(cache)
            if (done // bs) % 8 == 0 or done == len(names):
                log(f"  features {done}/{len(names)} {time.time() - t0:.0f}s")
    return feats, time.time() - t0


def _names_sha(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dogscats-train.tar")
    p.add_argument("--workdir", type=Path, default=REPO / "cache" / "train" / "dogscats")
    p.add_argument("--epochs", type=int, default=200, help="L-BFGS iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the head weight")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="reuse the (partial) feature cache")
    p.add_argument("--out", type=Path, default=REPO / "src" / "rpdetect" / "zoo" / "weights")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = open_log(args.workdir / "train.log")

    command = shlex.join([sys.executable, *sys.argv])
    log(f"start: {command}")
    t_start = time.time()
    digest = sha256_file(args.data)
    log(f"data {args.data} sha256 {digest}")
    names, labels = list_tar(args.data)
    held = held_aside_mask(names, labels)
    log(f"{len(names)} images, held aside {held.sum()}")
    held_names = [n for n, h in zip(names, held) if h]
    args.out.mkdir(parents=True, exist_ok=True)
    split = {
        "tar": args.data.name,
        "tar_sha256": digest,
        "rule": (
            "per class (cats, dogs), file names sorted, permuted by one "
            "numpy.random.default_rng(0); first 250 per class held aside"
        ),
        "split_seed": SPLIT_SEED,
        "held_per_class": HELD_PER_CLASS,
        "classes": list(dogscats.CLASSES),
        "preparation": "rpdetect.zoo.dogscats.prepare: shorter side -> 224 (INTER_AREA), center crop 224",
        "n_total": len(names),
        "n_held_aside": len(held_names),
        "held_aside": held_names,
    }
    (args.out / "dogscats_split.json").write_text(json.dumps(split, indent=0) + "\n")

    t0 = time.time()
    feats, extract_s = extract_features(args.data, names, args.workdir / "features.pt", args.resume, log)
    log(f"features ready ({time.time() - t0:.0f}s)")

    y = torch.from_numpy(labels)
    tr, ho = torch.from_numpy(~held), torch.from_numpy(held)
    torch.manual_seed(args.seed)
    head = torch.nn.Linear(dogscats.FEATURES, len(dogscats.CLASSES))
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=args.epochs, line_search_fn="strong_wolfe")
    x_tr, y_tr = feats[tr], y[tr]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x_tr), y_tr) + args.l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    t1 = time.time()
    opt.step(closure)
    with torch.no_grad():
        loss = (F.cross_entropy(head(x_tr), y_tr) + args.l2 * head.weight.pow(2).sum()).item()
        train_acc = (head(x_tr).argmax(1) == y_tr).float().mean().item()
        ho_acc = (head(feats[ho]).argmax(1) == y[ho]).float().mean().item()
    log(f"head: loss {loss:.4f} train_acc {train_acc:.4f} held_aside_acc {ho_acc:.4f} ({time.time() - t1:.1f}s)")

    state = {k: v.detach().float().contiguous() for k, v in head.state_dict().items()}
    torch.save(state, args.out / "dogscats_head.pt")

    # End-to-end check through build() on a few held-aside images (prepare + full model).
    model = dogscats.build()
    idx = np.flatnonzero(held)[:: max(1, held.sum() // 20)]
    with tarfile.open(args.data) as tar, torch.no_grad():
        imgs = np.stack([dogscats.prepare(dogscats.decode(tar.extractfile(names[i]).read())) for i in idx])
        e2e = (model(dogscats.to_input(imgs)).argmax(1).numpy() == labels[idx]).mean()
        ref = (head(feats[idx]).argmax(1).numpy() == labels[idx]).mean()
    log(f"end-to-end check on {len(idx)} held-aside images: {e2e:.3f} (features path {ref:.3f})")
    if e2e != ref:
        raise SystemExit("end-to-end accuracy differs from the feature path")

    meta = {
        "model": "rpdetect.zoo.dogscats (EfficientNet-Lite0 ImageNet features + Linear(1280,2))",
        "command": command,
        "data": args.data.name,
        "data_sha256": digest,
        "epochs": args.epochs,
        "epochs_meaning": "L-BFGS iterations (full batch, strong Wolfe) on cached frozen features",
        "seed": args.seed,
        "l2": args.l2,
        "split": "dogscats_split.json",
        "n_train": int(tr.sum()),
        "n_held_aside": int(ho.sum()),
        "train_acc": round(train_acc, 5),
        "held_aside_acc": round(ho_acc, 5),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": args.threads,
        "train_time_s": round(time.time() - t_start, 1),
        "feature_extraction_s": None if extract_s != extract_s else round(extract_s, 1),
        "feature_extraction_note": "wall time of the (possibly earlier, resumed) backbone pass; "
        "null when the cache predates this field",
    }
    (args.out / "dogscats_head.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"done: held_aside_acc {ho_acc:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
