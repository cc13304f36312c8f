"""The paper's Figures 2 and 3 as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from .protocol import FigureData

__all__ = ["figure2", "figure3", "roc_figure", "write_figures"]


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure2(data: FigureData, path: Path, *, names: list[str] | None = None, title: str) -> Path:
    """Classification consistency versus kappa: the fraction of noisy copies that keep the
    label of the unperturbed input, for clean images and for each attack in ``names``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ["clean", *(names if names is not None else
                            [k for k in data.consistency if k != "clean"])]:
        if name in data.consistency:
            style = dict(color="black", linewidth=2.5) if name == "clean" else {}
            ax.plot(data.kappas, data.consistency[name], marker="o", label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("kappa (noise std, [0, 1] pixel units)")
    ax.set_ylabel("fraction of noisy copies keeping the label")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def figure3(data: FigureData, path: Path, *, title: str) -> Path:
    """Logits of a clean and an adversarial image before and after noise (kappa = the
    detector's largest), and their difference Z(x) - Z(x~)."""
    plt = _pyplot()
    z = data.logits
    fig, axes = plt.subplots(2, 3, figsize=(12, 5))
    for row, name in enumerate(("clean", "adversarial")):
        before, after = z[name], z[name + "_noisy"]
        diff = before - after
        _draw(axes[row, 0], before, "tab:blue")
        axes[row, 0].set_title(f"{name}: Z(x), label {int(before.argmax())}")
        _draw(axes[row, 1], after, "tab:orange")
        axes[row, 1].set_title(f"{name}: Z(x~), kappa={data.logit_kappa:g}, "
                               f"label {int(after.argmax())}")
        _draw(axes[row, 2], diff, "tab:red")
        axes[row, 2].set_title(f"{name}: Z(x) - Z(x~), std {diff.std():.3f}")
    for ax in axes[1]:
        ax.set_xlabel("class")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _draw(ax, values: np.ndarray, color: str) -> None:  # type: ignore[no-untyped-def]
    """Bars for a few classes, a line for many (1000 ImageNet logits)."""
    k = np.arange(len(values))
    if len(values) <= 20:
        ax.bar(k, values, color=color)
        ax.set_xticks(k)
    else:
        ax.plot(k, values, linewidth=0.8, color=color)
    ax.axhline(0.0, color="grey", linewidth=0.5)


def roc_figure(roc: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, *,
               title: str) -> Path:
    """One panel per rule family: detection rate against the clean false-positive rate on the
    evaluation images, one curve per attack (thresholds from the calibration images at target
    rates 0..0.5)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(roc), figsize=(5.5 * len(roc), 4.6), squeeze=False)
    for ax, (family, curves) in zip(axes[0], roc.items()):
        for attack, (fpr, tpr) in curves.items():
            order = np.argsort(fpr, kind="stable")
            ax.plot(fpr[order], tpr[order], marker=".", label=attack)
        ax.axvline(0.05, color="grey", linestyle=":", linewidth=1)
        ax.set(xlim=(0, 0.5), ylim=(0, 1.02), xlabel="clean false-positive rate (evaluation)",
               ylabel="detection rate", title=f"rule: {family}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_figures(data: FigureData, out_dir: Path, *, dataset: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [figure2(data, out_dir / "figure2_consistency.png",
                     title=f"{dataset}: label consistency under noise")]
    bim = sorted((e, n) for n, e in data.epsilons.items()
                 if e is not None and n in data.consistency)
    if len(bim) > 1:
        paths.append(figure2(data, out_dir / "figure2_bim_budgets.png", names=[n for _, n in bim],
                             title=f"{dataset}: BIM-L2 at growing budgets"))
    if data.logits:
        paths.append(figure3(data, out_dir / "figure3_logits.png",
                             title=f"{dataset}: logits before and after noise"))
    return paths
