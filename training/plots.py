"""Learning-curve and confusion-matrix figures (PNG, no display needed).

Figures are built with ``matplotlib.figure.Figure`` directly, not ``pyplot``: no global backend
to choose at import time, no figure registry to leak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, training and validation, with the internal size marked."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [r.get(prefix + metric) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, ms=3, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    sizes = [r.get("internal_size") for r in history]
    for i in range(1, len(sizes)):
        if sizes[i] != sizes[i - 1]:
            for ax in axes:
                ax.axvline(epochs[i] - 0.5, color="grey", ls=":", lw=1)
                ax.text(
                    epochs[i] - 0.5,
                    ax.get_ylim()[1],
                    f"{sizes[i]}px",
                    fontsize=7,
                    va="top",
                    ha="left",
                    color="grey",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: list[str], path: Path, title: str
) -> None:
    """Row-normalised confusion matrix (rows: true class) with counts in each cell."""
    matrix = np.asarray(matrix)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_reliability(curves: dict[str, list[dict]], path: Path, title: str) -> None:
    """Reliability diagram: per confidence bin (``training.calibration.reliability_bins``), the
    accuracy against the mean confidence, one line per set of answers (e.g. before and after
    calibration), the diagonal where they should lie, and how many answers each bin holds."""
    fig = Figure(figsize=(10, 4.5))
    diagram, counts = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    diagram.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfectly calibrated")
    for (label, rows), marker in zip(curves.items(), ("o", "s", "^", "D"), strict=False):
        filled = [r for r in rows if r["count"]]
        diagram.plot(
            [r["confidence"] for r in filled],
            [r["accuracy"] for r in filled],
            f"-{marker}",
            ms=4,
            label=label,
        )
        centres = [(r["lower"] + r["upper"]) / 2 for r in rows]
        counts.plot(centres, [r["count"] for r in rows], f"-{marker}", ms=3, label=label)
    diagram.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean top-1 probability in the bin")
    diagram.set_ylabel("accuracy in the bin")
    diagram.set_title(title, fontsize=10)
    diagram.grid(alpha=0.3)
    diagram.legend(fontsize=8, loc="upper left")
    counts.set_yscale("log")
    counts.set(xlim=(0, 1), xlabel="top-1 probability (bin centre)", ylabel="answers in the bin")
    counts.set_title("how many answers each bin holds", fontsize=10)
    counts.grid(alpha=0.3)
    counts.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
