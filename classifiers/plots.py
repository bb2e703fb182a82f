"""ROC and precision-recall figures (matplotlib, Agg: no display needed) for `compare` and `tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _operating_point(positive: np.ndarray, selected: np.ndarray) -> tuple[float, float, float]:
    """(false positive rate, recall, precision) of a selection; arrays of shape ``(n,)``."""
    tp = np.sum(selected & positive)
    fpr = np.sum(selected & ~positive) / max(1, np.sum(~positive))
    recall = tp / max(1, np.sum(positive))
    precision = tp / np.sum(selected) if selected.any() else 1.0
    return float(fpr), float(recall), float(precision)


def _style(i: int) -> dict:
    # Explicit colours: the threshold markers would otherwise take every other colour of the cycle, so
    # curves 0 and 5 shared one. Dashes keep curves that coincide (perfect ones do) visible.
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", "-.", (0, (1, 1)))[i % 4]}


def draw_roc(ax, curves: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """ROC curves on ``ax``; each curve is ``(name, positive, scores, selected)`` with arrays of shape ``(n,)``.

    The operating point of each method's own threshold (its ``selected``) is marked on its curve.
    """
    for i, (name, positive, scores, selected) in enumerate(curves):
        fpr, tpr, _ = roc_curve(positive, scores)
        line, = ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {roc_auc_score(positive, scores):.3f})", zorder=3 + i,
                        **_style(i))
        x, y, _ = _operating_point(positive, selected)
        ax.plot([x], [y], "o", ms=8, mfc="white", mec=line.get_color(), mew=2, zorder=10 + i)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
    ax.set(xlabel="false positive rate (negatives selected)", ylabel="true positive rate (recall)",
           title="ROC  (○ = each method's threshold)", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def draw_pr(ax, curves: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Precision-recall curves on ``ax`` with each method's threshold marked; curves as in :func:`draw_roc`."""
    base = None
    for i, (name, positive, scores, selected) in enumerate(curves):
        precision, recall, _ = precision_recall_curve(positive, scores)
        line, = ax.plot(recall, precision, lw=1.8, zorder=3 + i, **_style(i),
                        label=f"{name} (AP {average_precision_score(positive, scores):.3f})")
        _, r, p = _operating_point(positive, selected)
        ax.plot([r], [p], "o", ms=8, mfc="white", mec=line.get_color(), mew=2, zorder=10 + i)
        base = float(np.mean(positive))
    if base is not None:
        ax.axhline(base, ls=":", color="grey", lw=1, label=f"chance ({base:.2f})")
    ax.set(xlabel="recall (positives selected)", ylabel="precision (selected that are positives)",
           title="Precision-recall  (○ = each method's threshold)", xlim=(-0.01, 1.01), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def save_comparison_plots(comparison, folder, title: str = "") -> list[Path]:
    """Write ``roc.png`` and ``precision-recall.png`` of a :class:`~classifiers.compare.Comparison` into ``folder``.

    Curves use each method's out-of-fold scores pooled over the folds.
    """
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    curves = [(name, comparison.positive, comparison.scores[name], comparison.selected[name]) for name in comparison.folds]
    suffix = f"{comparison.n_folds}-fold out-of-fold scores, {int(comparison.positive.sum())} positives / " \
             f"{int((~comparison.positive).sum())} negatives"
    written = []
    for fname, draw in (("roc.png", draw_roc), ("precision-recall.png", draw_pr)):
        fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
        draw(ax, curves)
        fig.suptitle(f"{title}\n{suffix}" if title else suffix, fontsize=10)
        fig.tight_layout()
        fig.savefig(folder / fname)
        plt.close(fig)
        written.append(folder / fname)
    return written


def save_tune_plot(result, path, title: str = "") -> Path:
    """One PNG for :func:`classifiers.train.tune`: validation ROC and PR of the tuned one-class SVM and
    the article default (thresholds marked), and the grid's mean ROC AUC over gamma × nu."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curves = []
    for name, model in (("tuned", result.tuned), ("article default", result.default)):
        v = model.validation_
        curves.append((name, v["positive"], v["scores"], v["scores"] >= model.threshold_))
    has_negatives = bool((~result.data.positive).any())
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6), dpi=100)
    if has_negatives:
        draw_roc(axes[0], curves)
        draw_pr(axes[1], curves)
    else:
        for ax in axes[:2]:
            ax.text(0.5, 0.5, "no negatives: no ROC or precision-recall to draw", ha="center", va="center")
            ax.set_axis_off()
    _draw_grid(axes[2], result.tuned)
    fig.suptitle((title + "\n" if title else "") + "one-class SVM on positives only; held-out positives and "
                 "negatives of each fold score it", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_grid(ax, model) -> None:
    search = model.search_
    if not search:
        ax.text(0.5, 0.5, "no search (no negatives to validate on)", ha="center", va="center")
        ax.set_axis_off()
        return
    best = search["candidates"][search["best"]]["params"]
    rows = [c for c in search["candidates"] if c["params"]["normalize"] == best["normalize"] and c["params"]["pca"] == best["pca"]]
    gammas = sorted({c["params"]["gamma"] for c in rows})
    nus = sorted({c["params"]["nu"] for c in rows})
    grid = np.full((len(nus), len(gammas)), np.nan)
    for c in rows:
        grid[nus.index(c["params"]["nu"]), gammas.index(c["params"]["gamma"])] = c["roc_auc"]
    im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            is_best = nus[i] == best["nu"] and gammas[j] == best["gamma"]
            ax.text(j, i, f"{v:.4f}" + (" ★" if is_best else ""), ha="center", va="center", fontsize=8,
                    color="black" if v > np.nanmean(grid) else "white", weight="bold" if is_best else "normal")
    ax.set_xticks(range(len(gammas)), [f"{g:g}" for g in gammas])
    ax.set_yticks(range(len(nus)), [f"{n:g}" for n in nus])
    ax.set(xlabel="gamma", ylabel="nu", title=f"mean validation ROC AUC ({best['normalize']} features; ★ = chosen)")
    ax.figure.colorbar(im, ax=ax, label="ROC AUC")
