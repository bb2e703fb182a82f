"""ROC and precision-recall figures (matplotlib, Agg: no display needed) for `compare` and `tune`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve


def _pyplot():
    from stylesift.extras import require

    matplotlib = require("matplotlib", "plots", "drawing ROC and precision-recall plots")
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


# A curve is (name, folds) with folds a list of (positive, scores, selected) arrays of one test
# split each. Scores of different fold models need not share a scale (each fold may pick other
# hyperparameters), so curves are averaged over folds rather than drawn from pooled scores.
GRID = np.linspace(0, 1, 201)
STYLES = ("-", "--", "-.", (0, (1, 1)), (0, (5, 2, 1, 2)), (0, (3, 1, 1, 1, 1, 1)))  # tell overlapping curves apart


def draw_roc(ax, curves) -> None:
    """Fold-averaged ROC curves on ``ax``, with each method's own threshold marked (mean over folds)."""
    for i, (name, folds) in enumerate(curves):
        tprs, aucs, points = [], [], []
        for positive, scores, selected in folds:
            fpr, tpr, _ = roc_curve(positive, scores)
            tprs.append(np.interp(GRID, fpr, tpr))
            aucs.append(roc_auc_score(positive, scores))
            points.append(_operating_point(positive, selected)[:2])
        mean = np.mean(tprs, axis=0)
        mean[0] = 0.0
        line, = ax.plot(GRID, mean, lw=1.8, ls=STYLES[i % len(STYLES)], label=f"{name} (AUC {np.mean(aucs):.3f})", zorder=3 + i)
        x, y = np.mean(points, axis=0)
        ax.plot([x], [y], "o", ms=8, color=line.get_color(), mfc="white", mew=2, zorder=10 + i)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
    ax.set(xlabel="false positive rate (share of negatives selected)", ylabel="true positive rate (recall)",
           title="ROC  (○ = each method's own threshold)", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def draw_pr(ax, curves) -> None:
    """Fold-averaged precision-recall curves (interpolated precision) with each method's threshold marked."""
    base = None
    for i, (name, folds) in enumerate(curves):
        precs, aps, points = [], [], []
        for positive, scores, selected in folds:
            precision, recall, _ = precision_recall_curve(positive, scores)
            # Interpolated precision: the best precision at this recall or more (monotone, standard).
            best = np.maximum.accumulate(precision[np.argsort(recall)][::-1])[::-1]
            precs.append(np.interp(GRID, np.sort(recall), best))
            aps.append(average_precision_score(positive, scores))
            points.append(_operating_point(positive, selected)[1:])
            base = float(np.mean(positive))
        line, = ax.plot(GRID, np.mean(precs, axis=0), lw=1.8, ls=STYLES[i % len(STYLES)], zorder=3 + i, label=f"{name} (AP {np.mean(aps):.3f})")
        r, p = np.mean(points, axis=0)
        ax.plot([r], [p], "o", ms=8, color=line.get_color(), mfc="white", mew=2, zorder=10 + i)
    if base is not None:
        ax.axhline(base, ls=":", color="grey", lw=1, label=f"chance ({base:.2f})")
    ax.set(xlabel="recall (share of positives selected)", ylabel="precision (share of selected that are positives)",
           title="Precision-recall  (○ = each method's own threshold)", xlim=(-0.01, 1.01), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def save_comparison_plots(comparison, folder, title: str = "") -> list[Path]:
    """Write ``roc.png`` and ``precision-recall.png`` of a :class:`~classifiers.compare.Comparison` into ``folder``.

    Curves are averaged over the folds (each fold's test split scored by that fold's model).
    """
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pos = comparison.positive
    curves = [(name, [(pos[t], comparison.scores[name][t], comparison.selected[name][t]) for t in comparison.test_folds])
              for name in comparison.folds]
    suffix = f"mean over {comparison.n_folds} stratified folds, {int(pos.sum())} positives / " \
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
        curves.append((name, [(v["positive"][t], v["scores"][t], v["scores"][t] >= model.threshold_) for t in v["folds"]]))
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
