"""Paper figures from the evaluation tables (PNG): privacy-utility trade-off (with intervals),
log-log ROC curves, configuration x attack heatmap, per-class AUC. Each figure sizes itself by what
it shows (attack and configuration counts, label lengths) so it stays legible at any study size."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and clusters have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from artifacts.schema import flagged  # noqa: E402
from utils.io import atomic_path  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def attacks_in(df: pd.DataFrame, metric: str) -> list[str]:
    suffix = f"_{metric}"
    return [c[: -len(suffix)] for c in df.columns if c.endswith(suffix)]


def privacy_utility(df: pd.DataFrame, metric: str, path: Path, intervals: pd.DataFrame | None = None) -> Path:
    return save_figure(privacy_utility_figure(df, metric, intervals), path)


def _errorbars(ax, g: pd.DataFrame, col: str, attack: str, metric: str, intervals: pd.DataFrame | None, color) -> None:
    """Horizontal bars: the attack metric's bootstrap interval (attack_intervals.csv); vertical bars:
    test accuracy's std over the evaluated targets (test_acc_std, with several targets)."""
    x, y = g[col].to_numpy(float), g["test_acc"].to_numpy(float)
    xerr = None
    if intervals is not None and not intervals.empty:
        iv = intervals[(intervals["attack"] == attack) & (intervals["metric"] == metric)]
        iv = g[["experiment", "dataset"]].merge(iv, on=["experiment", "dataset"], how="left")
        lo, hi = iv["ci_low"].to_numpy(float), iv["ci_high"].to_numpy(float)
        xerr = np.nan_to_num(np.vstack([x - lo, hi - x]).clip(min=0))
    yerr = g["test_acc_std"].fillna(0).to_numpy(float) if "test_acc_std" in g else None
    if xerr is not None or yerr is not None:
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=0.8, capsize=2, alpha=0.7)


def privacy_utility_figure(df: pd.DataFrame, metric: str, intervals: pd.DataFrame | None = None):
    """Test accuracy against attack `metric`, one panel per attack, one line per method across sparsity,
    with error bars where intervals are known (_errorbars). A TPR at an FPR level below 1/#non-members
    (its `_below_floor` flag) was not measured: such points are drawn hollow and left off the line."""
    attacks = attacks_in(df, metric)
    cols = min(4, max(1, len(attacks)))
    rows = int(np.ceil(len(attacks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    any_below = False
    for ax, attack in zip(axes.flat, attacks):
        col = f"{attack}_{metric}"
        for method, g in df.sort_values("sparsity").groupby("method", sort=False):
            style = dict(marker="*", markersize=12, linestyle="none") if method == "dense" else dict(marker="o")
            if "defense" in g and g["defense"].fillna("none").ne("none").any():  # a defense, not a method: apart
                style = dict(marker="D", markersize=6, linestyle="--")
            below = flagged(g, col)
            (line,) = ax.plot(g.loc[~below, col], g.loc[~below, "test_acc"], label=method, **style)
            _errorbars(ax, g, col, attack, metric, intervals, line.get_color())
            if below.any():  # same colour and marker, hollow, not joined to the measured points
                any_below = True
                ax.plot(g.loc[below, col], g.loc[below, "test_acc"], linestyle="none", marker=style["marker"],
                        markersize=style.get("markersize"), color=line.get_color(), markerfacecolor="none",
                        label="_below_floor")
            if g["sparsity"].gt(0).any():  # pruned configurations, defended or not
                for _, r in g.iterrows():
                    ax.annotate(f"{r['sparsity']:g}", (r[col], r["test_acc"]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        ax.set_title(attack)
        ax.set_xlabel(metric)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(attacks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    note = "\nhollow: FPR level below 1/#non-members, not measured (TPR with no false positive)" if any_below else ""
    fig.suptitle(f"privacy-utility: test accuracy vs attack {metric} (labels: sparsity; dashed diamonds: defended){note}")
    fig.tight_layout()
    return fig


def measured_roc(roc: dict) -> tuple[np.ndarray, np.ndarray]:
    """The ROC points a log-log plot may draw: FPR at or above the floor `min_fpr` = 1/#non-members
    (below it the step ROC only repeats the TPR at FPR 0: nothing is measured there) and both rates > 0."""
    fpr, tpr = np.asarray(roc["fpr"], float), np.asarray(roc["tpr"], float)
    ok = (fpr >= roc.get("min_fpr", 0.0)) & (fpr > 0) & (tpr > 0)
    return fpr[ok], tpr[ok]


def roc_curves(experiment: str, rocs: dict[str, dict], path: Path) -> Path:
    return save_figure(roc_figure(experiment, rocs), path)


def roc_figure(experiment: str, rocs: dict[str, dict]):
    """Every attack's ROC of one experiment on log-log axes (the low-FPR regime matters), from the FPR
    floor up. rocs[attack] = {fpr, tpr, target, auc, min_fpr}: one target's curve, labelled with that
    target and its own AUC (not the mean over targets)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, floors = 1.0, []
    for attack, roc in sorted(rocs.items()):
        fpr, tpr = measured_roc(roc)
        if len(fpr):
            floors.append(roc.get("min_fpr") or fpr.min())
            lo = min(lo, floors[-1], tpr.min())
            label = f"{attack} (model {roc.get('target', '?')}, AUC {roc.get('auc', np.nan):.3f})"
            ax.loglog(fpr, tpr, label=label, lw=1.2)
    floor = min(floors, default=lo)
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set_xlim(floor, 1)
    ax.set_ylim(lo, 1)
    ax.set_xlabel(f"false positive rate (from 1/#non-members = {floor:.2g})")
    ax.set_ylabel("true positive rate")
    ax.set_title(experiment)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    return fig


def config_labels(df: pd.DataFrame) -> pd.Series:
    """A configuration's name in figures: its experiment name, with the dataset when several are shown."""
    label = df["experiment"].astype(str)
    return label + " (" + df["dataset"].astype(str) + ")" if df["dataset"].nunique() > 1 else label


def heatmap(df: pd.DataFrame, metric: str, path: Path) -> Path:
    """Configuration x attack grid of one metric. Configurations are rows (their names read
    horizontally, however many), attacks columns with slanted names; the size follows both counts."""
    attacks = attacks_in(df, metric)
    labels = config_labels(df)
    grid = df.set_index(labels)[[f"{a}_{metric}" for a in attacks]].astype(float)
    grid.columns = attacks
    width = 2.0 + 0.07 * labels.str.len().max() + 0.75 * len(attacks)
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.4 * len(grid)))
    sns.heatmap(grid, annot=True, fmt=".3f", cmap="viridis", ax=ax, cbar_kws={"label": metric},
                annot_kws={"fontsize": 8})
    ax.set_xticklabels(ax.get_xticklabels(), rotation=90)  # upright boxes: never overlap (tested)
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    ax.set_xlabel("attack")
    ax.set_ylabel("configuration")
    ax.set_title(f"attack {metric}")
    fig.tight_layout()
    return save_figure(fig, path)


def per_class(per_class_df: pd.DataFrame, attack: str, path: Path) -> Path:
    """One attack's AUC within each true class (mean over targets), one line per configuration, with
    chance at 0.5: where leakage concentrates, and whether pruning spreads it unevenly."""
    d = per_class_df[per_class_df["attack"] == attack]
    cols = [c for c in d.columns if c.startswith("auc_class_")]
    classes = [int(c.rsplit("_", 1)[1]) for c in cols]
    fig, ax = plt.subplots(figsize=(min(14.0, 4.0 + 0.3 * len(classes)), 4.0))
    marker = "o" if len(classes) <= 20 else None
    for label, (_, r) in zip(config_labels(d), d.iterrows()):
        ax.plot(classes, r[cols].to_numpy(float), marker=marker, markersize=4, lw=1.2,
                label=f"{label} (range {r['auc_range']:.3f})")
    ax.axhline(0.5, color="k", ls="--", lw=0.8, label="chance")
    ax.set_xlabel("true class")
    ax.set_ylabel(f"{attack} AUC within the class")
    if len(classes) <= 20:
        ax.set_xticks(classes)
    ax.set_title(f"per-class leakage: {attack} (mean over {int(d['num_targets'].max())} target(s))")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def mean_interval(v: pd.Series, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the models' accuracies and its t interval (the models' spread; one model: no interval)."""
    from scipy import stats

    v = v.astype(float).dropna()
    m = float(v.mean()) if len(v) else np.nan
    if len(v) < 2:
        return m, m, m
    h = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


def sparsity_sweep(intervals: pd.DataFrame, training: pd.DataFrame, attack: str, path: Path) -> Path:
    return save_figure(sparsity_sweep_figure(intervals, training, attack), path)


def sparsity_sweep_figure(intervals: pd.DataFrame, training: pd.DataFrame, attack: str):
    """The original study's sweep: `attack` AUC and TPR at 0.1% FPR against sparsity (intervals from
    attack_intervals.csv), one line per pruned method, dense as a horizontal band (its interval); beside them
    test accuracy (solid) and train accuracy (dotted) against sparsity, mean over the models with a t interval.
    A TPR below the FPR floor (not measured) is drawn hollow. One row of panels per dataset."""
    datasets = list(dict.fromkeys(intervals["dataset"]))
    fig, axes = plt.subplots(len(datasets), 3, figsize=(13.5, 3.8 * len(datasets)), squeeze=False)
    for row, ds in zip(axes, datasets):
        iv = intervals[(intervals["dataset"] == ds) & (intervals["attack"] == attack)]
        tr = training[training["dataset"].astype(str) == str(ds)]
        for ax, metric in zip(row[:2], ("auc", "tpr_at_0.1pct_fpr")):
            d = iv[iv["metric"] == metric]
            for method, g in d.sort_values("sparsity").groupby("method", sort=False):
                lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
                v = g["value"].to_numpy(float)
                if not (g["sparsity"].astype(float) > 0).any():  # dense (or a defended dense): a band
                    band = "k" if method == "dense" else None
                    line = ax.axhline(v[0], color=band, lw=1.2, label=f"{method} ({v[0]:.3f})")
                    ax.axhspan(lo[0], hi[0], color=line.get_color(), alpha=0.12, lw=0)
                    continue
                below = g["below_floor"].astype(bool).to_numpy() if "below_floor" in g else np.zeros(len(g), bool)
                x = g["sparsity"].to_numpy(float)
                (line,) = ax.plot(x[~below], v[~below], marker="o", label=method)
                ax.errorbar(x, v, yerr=np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0)), fmt="none",
                            ecolor=line.get_color(), elinewidth=0.9, capsize=3)
                if below.any():
                    ax.plot(x[below], v[below], "o", color=line.get_color(), markerfacecolor="none")
            ax.set_xlabel("sparsity")
            ax.set_ylabel(f"{attack} {metric}")
            ax.set_title(f"{ds}: {attack} {'AUC' if metric == 'auc' else 'TPR at 0.1% FPR'}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax = row[2]
        for method, g in tr.groupby("method", sort=False):
            by = g.groupby("sparsity")
            x = np.array(sorted(by.groups), float)
            test = np.array([mean_interval(by.get_group(s)["test_acc"]) for s in x])
            train = np.array([mean_interval(by.get_group(s)["train_acc"]) for s in x])
            if not (x > 0).any():  # dense (or a defended dense): a band
                line = ax.axhline(test[0, 0], color="k" if method == "dense" else None, lw=1.2,
                                  label=f"{method} test ({test[0, 0]:.3f})")
                ax.axhspan(test[0, 1], test[0, 2], color=line.get_color(), alpha=0.12, lw=0)
                ax.axhline(train[0, 0], color=line.get_color(), lw=1.0, ls=":", label=f"{method} train ({train[0, 0]:.3f})")
                continue
            (line,) = ax.plot(x, test[:, 0], marker="o", label=f"{method} test")
            ax.errorbar(x, test[:, 0], yerr=np.vstack([test[:, 0] - test[:, 1], test[:, 2] - test[:, 0]]), fmt="none",
                        ecolor=line.get_color(), elinewidth=0.9, capsize=3)
            ax.plot(x, train[:, 0], marker=".", ls=":", color=line.get_color(), label=f"{method} train")
        ax.set_xlabel("sparsity")
        ax.set_ylabel("accuracy (mean over models)")
        ax.set_title(f"{ds}: accuracy (test solid, train dotted)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
