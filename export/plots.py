"""PNG plots for the training report and eval-edge (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edge_oneclass.export.metrics import roc_points  # noqa: E402


def _draw_hist(ax, pos: np.ndarray, neg: np.ndarray, threshold: float, label: str) -> None:
    both = np.r_[pos, neg]
    bins = np.linspace(both.min(), both.max(), 40) if both.max() > both.min() else 10
    ax.hist(pos, bins=bins, alpha=0.6, label=f"{label} ({len(pos)})")
    if len(neg):
        ax.hist(neg, bins=bins, alpha=0.6, label=f"negatives ({len(neg)})")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("int8 score (higher = more like the label)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)


def _draw_roc(ax, pos: np.ndarray, neg: np.ndarray) -> None:
    fpr, tpr = roc_points(pos, neg)
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false-alarm rate")
    ax.set_ylabel("recall")


def histogram(path: Path, pos: np.ndarray, neg: np.ndarray, threshold: float, label: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _draw_hist(ax, pos, neg, threshold, label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def roc(path: Path, pos: np.ndarray, neg: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(4, 4))
    _draw_roc(ax, pos, neg)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loss_curve(path: Path, loss: list[float]) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(1, len(loss) + 1), loss)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (MSE)")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_plot(path: Path, pos: np.ndarray, neg: np.ndarray, threshold: float, label: str) -> None:
    """Histogram and ROC side by side, for eval-edge --plot."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    _draw_hist(a, pos, neg, threshold, label)
    _draw_roc(b, pos, neg)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
