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
