"""Train the CIFAR-10 classifier of ``rpdetect.zoo.cifar10_cnn`` (paper Table 1) on CPU.

Data: ``cifar10-train.tar`` (50,000 32x32 JPEGs, ``cifar10-train/<class>/<file>``), decoded with
OpenCV to RGB uint8 once and cached in the workdir (git-ignored ``cache/``).

Held-aside split (never trained on): for each class, the file names sorted, permuted with
``numpy.random.default_rng(SPLIT_SEED)`` (SPLIT_SEED = 0, one generator used for the classes in
alphabetical order), the first 500 are held aside: 5,000 images in all. The list of held-aside
paths (relative to the tar root) is written to ``src/rpdetect/zoo/weights/cifar10_split.json``.

Training: half-width ResNet-9, SGD (Nesterov, momentum 0.9, weight decay 5e-4), batch 256,
one-cycle learning rate (linear 0 -> max over the first 25% of steps, then linear to 0), label
smoothing 0.1, augmentation random crop 32 from a 4-pixel reflect-padded image + horizontal flip.

A checkpoint is written to the workdir every 25 batches and after every epoch; ``--resume``
continues from it (mid-epoch too: the augmentation generator state is saved).
At the end the weights go to ``src/rpdetect/zoo/weights/cifar10_cnn.pt`` (float32 state_dict)
with a provenance JSON ``cifar10_cnn.json`` next to them.

Usage (from the repository root)::

    nice -n 15 .venv/bin/python benchmarks/train_cifar10.py --epochs 10 --resume
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
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
from rpdetect.zoo import cifar10_cnn, sha256_file  # noqa: E402

SPLIT_SEED = 0
HELD_PER_CLASS = 500


def decode_tar(tar_path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All JPEGs of the tar: (relative paths sorted, uint8 RGB [N,32,32,3], labels [N])."""
    import cv2

    names, images, labels = [], [], []
    with tarfile.open(tar_path) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")]
        members.sort(key=lambda m: m.name)
        for m in members:
            parts = Path(m.name).parts
            cls = parts[-2]
            label = cifar10_cnn.CLASSES.index(cls)
            buf = np.frombuffer(tar.extractfile(m).read(), dtype=np.uint8)
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape != (32, 32, 3):
                raise ValueError(f"bad image {m.name}: {None if bgr is None else bgr.shape}")
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            labels.append(label)
            names.append(m.name)
    return names, np.stack(images), np.asarray(labels, dtype=np.int64)


def load_data(tar_path: Path, workdir: Path, digest: str):
    cache = workdir / f"decoded-{digest[:16]}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return [str(n) for n in z["names"]], z["images"], z["labels"]
    names, images, labels = decode_tar(tar_path)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, names=np.asarray(names), images=images, labels=labels)
    tmp.replace(cache)
    return names, images, labels


def held_aside_mask(names: list[str], labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the held-aside images (rule in the module docstring)."""
    rng = np.random.default_rng(SPLIT_SEED)
    held = np.zeros(len(names), dtype=bool)
    order = np.argsort(np.asarray(names), kind="stable")
    for c in range(len(cifar10_cnn.CLASSES)):
        idx = [i for i in order if labels[i] == c]  # sorted by name
        pick = rng.permutation(len(idx))[:HELD_PER_CLASS]
        held[np.asarray(idx)[pick]] = True
    return held


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(cifar10_cnn.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cifar10_cnn.STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        xb = x[i : i + bs].contiguous(memory_format=torch.channels_last)
        correct += (model(xb).argmax(1) == y[i : i + bs]).sum().item()
    return correct / max(1, len(x))


def lr_at(step: int, total: int, max_lr: float, pct: float = 0.25) -> float:
    up = max(1, int(total * pct))
    if step < up:
        return max_lr * (step + 1) / up
    return max_lr * max(0.0, (total - step) / max(1, total - up))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-train.tar")
    p.add_argument("--workdir", type=Path, default=REPO / "cache" / "train" / "cifar10")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue from workdir/checkpoint.pt")
    p.add_argument("--smoke", type=int, default=0, help="N>0: N batches only, no export")
    p.add_argument("--limit-batches", type=int, default=0, help=argparse.SUPPRESS)  # testing
    p.add_argument("--stop-after", type=int, default=0, help=argparse.SUPPRESS)  # testing: exit
    p.add_argument("--out", type=Path, default=REPO / "src" / "rpdetect" / "zoo" / "weights")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    log_path = args.workdir / ("smoke.log" if args.smoke else "train.log")
    log = open_log(log_path)

    command = shlex.join([sys.executable, *sys.argv])
    log(f"start: {command}")
    digest = sha256_file(args.data)
    log(f"data {args.data} sha256 {digest}")

    t0 = time.time()
    names, images, labels = load_data(args.data, args.workdir, digest)
    held = held_aside_mask(names, labels)
    log(f"decoded {len(names)} images in {time.time() - t0:.1f}s; held aside {held.sum()}")

    held_names = [n for n, h in zip(names, held) if h]
    split = {
        "tar": args.data.name,
        "tar_sha256": digest,
        "rule": (
            "per class (alphabetical), file names sorted, permuted by one "
            "numpy.random.default_rng(0); first 500 per class held aside"
        ),
        "split_seed": SPLIT_SEED,
        "held_per_class": HELD_PER_CLASS,
        "classes": list(cifar10_cnn.CLASSES),
        "n_total": len(names),
        "n_held_aside": len(held_names),
        "held_aside": held_names,
    }
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cifar10_split.json").write_text(json.dumps(split, indent=0) + "\n")

    x_tr, y_tr = to_tensor(images[~held]), torch.from_numpy(labels[~held])
    x_ho, y_ho = to_tensor(images[held]), torch.from_numpy(labels[held])
    if args.smoke:
        x_ho, y_ho = x_ho[:500], y_ho[:500]
    del images

    torch.manual_seed(args.seed)
    model = cifar10_cnn.build(pretrained=False)
    model = model.to(memory_format=torch.channels_last)  # ~25% faster on CPU (oneDNN)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.0, momentum=0.9, nesterov=True, weight_decay=args.wd
    )
    steps_per_epoch = len(x_tr) // args.batch  # drop last
    if args.smoke or args.limit_batches:
        steps_per_epoch = args.smoke or args.limit_batches
    total = steps_per_epoch * args.epochs

    ckpt_path = args.workdir / "checkpoint.pt"

    def save_ckpt(epoch_done: int, batch_done: int, extra: dict) -> None:
        ck = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "epoch": epoch_done,  # completed epochs
            "batch": batch_done,  # completed batches of epoch `epoch_done` (0-based epoch index)
            "epochs": args.epochs,
            "seed": args.seed,
            "history": history,
            "train_time": train_time,
            **extra,
        }
        torch.save(ck, ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)

    start_epoch, start_batch, history, train_time, partial = 0, 0, [], 0.0, None
    if args.resume and ckpt_path.exists() and not args.smoke:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck["epochs"] != args.epochs or ck["seed"] != args.seed:
            raise SystemExit(f"checkpoint is for epochs={ck['epochs']} seed={ck['seed']}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start_epoch, history, train_time = ck["epoch"], ck["history"], ck["train_time"]
        start_batch = int(ck.get("batch", 0))
        if start_batch:
            partial = ck
        log(f"resumed at epoch {start_epoch + 1} batch {start_batch} ({train_time:.0f}s trained)")

    for epoch in range(start_epoch, args.epochs):
        model.train()
        perm = torch.from_numpy(np.random.default_rng([args.seed, epoch]).permutation(len(x_tr)))
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        loss_sum, correct, seen, first, elapsed0 = 0.0, 0, 0, 0, 0.0
        if partial is not None:  # resume inside this epoch
            gen.set_state(partial["gen_state"])
            loss_sum, correct, seen = partial["loss_sum"], partial["correct"], partial["seen"]
            first, elapsed0 = start_batch, partial["epoch_elapsed"]
            partial = None
        te = time.time() - elapsed0
        for b in range(first, steps_per_epoch):
            step = epoch * steps_per_epoch + b
            if args.stop_after and step == args.stop_after:
                log(f"--stop-after {step}: exiting")
                return 3
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, args.lr)
            idx = perm[b * args.batch : (b + 1) * args.batch]
            xb = augment(x_tr[idx], gen).contiguous(memory_format=torch.channels_last)
            yb = y_tr[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
            if (b + 1) % 25 == 0 or args.smoke:
                log(
                    f"  epoch {epoch + 1} batch {b + 1}/{steps_per_epoch} loss {loss_sum / seen:.4f} "
                    f"train_acc {correct / seen:.4f} lr {opt.param_groups[0]['lr']:.4f} "
                    f"{(time.time() - te) / (b + 1):.2f}s/batch"
                )
                if not args.smoke and b + 1 < steps_per_epoch:
                    save_ckpt(
                        epoch,
                        b + 1,
                        {
                            "gen_state": gen.get_state(),
                            "loss_sum": loss_sum,
                            "correct": correct,
                            "seen": seen,
                            "epoch_elapsed": time.time() - te,
                        },
                    )
        epoch_time = time.time() - te
        acc = evaluate(model, x_ho, y_ho)
        train_time += epoch_time
        history.append(
            {
                "epoch": epoch + 1,
                "loss": round(loss_sum / seen, 5),
                "train_acc": round(correct / seen, 5),
                "held_aside_acc": round(acc, 5),
                "epoch_s": round(epoch_time, 1),
            }
        )
        log(
            f"epoch {epoch + 1}/{args.epochs} loss {loss_sum / seen:.4f} train_acc {correct / seen:.4f} "
            f"held_aside_acc {acc:.4f} epoch_time {epoch_time:.0f}s total {train_time:.0f}s"
        )
        if not args.smoke:
            save_ckpt(epoch + 1, 0, {})

    if args.smoke:
        log("smoke done (nothing exported)")
        return 0

    acc = evaluate(model, x_ho, y_ho)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    torch.save(state, args.out / "cifar10_cnn.pt")
    meta = {
        "model": "rpdetect.zoo.cifar10_cnn (half-width ResNet-9)",
        "command": command,
        "data": str(args.data.name),
        "data_sha256": digest,
        "epochs": args.epochs,
        "seed": args.seed,
        "batch": args.batch,
        "max_lr": args.lr,
        "weight_decay": args.wd,
        "label_smoothing": args.label_smoothing,
        "optimizer": "SGD nesterov momentum 0.9, one-cycle piecewise-linear LR (25% up)",
        "augmentation": "random crop 32 of 4px reflect pad, horizontal flip",
        "split": "cifar10_split.json",
        "n_train": int(len(x_tr)),
        "n_held_aside": int(len(x_ho)),
        "held_aside_acc": round(acc, 5),
        "history": history,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": args.threads,
        "train_time_s": round(train_time, 1),
    }
    (args.out / "cifar10_cnn.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"done: held_aside_acc {acc:.4f}, weights -> {args.out / 'cifar10_cnn.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
