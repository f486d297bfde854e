"""The per-example stage's figures, each with the table it draws (artifacts/paths.per_example_figure):
memorisation against the change in exposure (scatter, binned trend with an interval), exposure by sparsity
for the most-memorised decile against the rest, and for image data the 16 examples whose exposure rose most."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from artifacts import paths
from analysis.plots import plt, save_figure
from utils.errors import UsageError
from utils.io import save_text

BINS = 8  # memorisation bins of the trend (quantile bins; fewer when memorisation takes fewer values)


def _mean_ci(v: np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else np.nan), np.nan, np.nan, len(v)
    h = student_t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - h), float(v.mean() + h), len(v)


def trend_table(pair_tables: dict) -> pd.DataFrame:
    """Per pair: the mean change in exposure within quantile bins of dense memorisation, with a t interval."""
    rows = []
    for (a, b, ds), t in pair_tables.items():
        d = t[np.isfinite(t["dense_mem"]) & np.isfinite(t["change"])]
        if d.empty:
            continue
        edges = np.unique(np.quantile(d["dense_mem"], np.linspace(0, 1, BINS + 1)))
        idx = np.clip(np.searchsorted(edges, d["dense_mem"], side="right") - 1, 0, max(len(edges) - 2, 0))
        for k in np.unique(idx):
            g = d[idx == k]
            m, lo, hi, n = _mean_ci(g["change"].to_numpy(float))
            rows.append({"pair": f"{a} - {b}", "dataset": ds, "mem_low": g["dense_mem"].min(), "mem_high": g["dense_mem"].max(),
                         "mem_mean": g["dense_mem"].mean(), "change_mean": m, "ci_low": lo, "ci_high": hi, "examples": n})
    return pd.DataFrame(rows)


def mem_vs_change(pair_tables: dict, results_dir: Path) -> str:
    png, csv = paths.per_example_figure(results_dir, "mem_vs_change")
    trend = trend_table(pair_tables)
    if trend.empty:
        return "skipped: no pair"
    save_text(trend.to_csv(index=False), csv)
    n = len(pair_tables)
    cols = min(n, 5)  # a grid: one row of 23 panels is unreadable
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False, sharex=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, ((a, b, ds), t) in zip(axes.flat, pair_tables.items()):
        ax.scatter(t["dense_mem"], t["change"], s=4, alpha=0.3, color="grey", label="example")
        g = trend[trend["pair"] == f"{a} - {b}"]
        ax.plot(g["mem_mean"], g["change_mean"], color="C3", marker="o", label="bin mean")
        ax.fill_between(g["mem_mean"], g["ci_low"], g["ci_high"], color="C3", alpha=0.25, label="95% interval")
        ax.axhline(0, color="black", lw=0.6)
        ax.set(title=f"{a} - {b} ({ds})", xlabel="dense memorisation", ylabel="change in exposure")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("with dense in the pair, memorisation and the change share the dense models' noise: "
                 "read the cross-fitted rho (exposure_changes.csv)", fontsize=9)
    save_figure(fig, png)
    return str(png)


def by_sparsity_table(cfgs: list, tables: dict, dense: dict) -> pd.DataFrame:
    """Mean exposure of each configuration for the top decile of dense memorisation and for the rest."""
    rows = []
    for c in cfgs:
        d = dense.get(c.res["dataset"])
        if d is None:
            continue
        mem = tables[d.key]["mem"].to_numpy(float)
        top = mem >= np.nanquantile(mem, 0.9)
        for group, sel in (("top decile", top), ("rest", ~top)):
            m, lo, hi, n = _mean_ci(tables[c.key]["exposure"].to_numpy(float)[sel])
            rows.append({"experiment": c.name, "dataset": c.res["dataset"], "method": c.res["method"],
                         "sparsity": 0.0 if c.res["method"] == "dense" else c.res["sparsity"], "group": group,
                         "exposure_mean": m, "ci_low": lo, "ci_high": hi, "examples": n})
    return pd.DataFrame(rows)


def exposure_by_sparsity(cfgs: list, tables: dict, dense: dict, results_dir: Path) -> str:
    png, csv = paths.per_example_figure(results_dir, "exposure_by_sparsity")
    t = by_sparsity_table(cfgs, tables, dense)
    if t.empty:
        return "skipped: no dense configuration to take memorisation from"
    save_text(t.to_csv(index=False), csv)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    methods = [m for m in dict.fromkeys(t["method"]) if m != "dense"] or ["dense"]
    for i, method in enumerate(methods):
        for group, style in (("top decile", "-"), ("rest", "--")):
            g = t[((t["method"] == method) | (t["method"] == "dense")) & (t["group"] == group)].sort_values("sparsity")
            ax.errorbar(g["sparsity"], g["exposure_mean"], yerr=[g["exposure_mean"] - g["ci_low"], g["ci_high"] - g["exposure_mean"]],
                        fmt=style + "o", color=f"C{i}", capsize=2, label=f"{method}, {group} memorised")
    ax.set(xlabel="sparsity (dense at 0)", ylabel="mean exposure", title="exposure by sparsity")
    ax.legend(fontsize=7)
    save_figure(fig, png)
    return str(png)


def pool_images(exp_dir: Path, labels: np.ndarray) -> np.ndarray:
    """The pool's images [N, H, W, C] uint8 from the configuration's recorded dataset; UsageError (why) when
    they are feature vectors, cannot be loaded, or are not the pool the labels describe."""
    from configs.config import load_config
    from data.datasets import load_dataset

    cfg = load_config(Path(exp_dir) / paths.CONFIG)
    ds = load_dataset(cfg)
    if ds.feature_vectors:
        raise UsageError(f"{cfg.dataset} holds feature vectors, not images")
    if len(ds.y_train) != len(labels) or not np.array_equal(ds.y_train, labels):
        raise UsageError(f"the loaded {cfg.dataset} pool is not the one {paths.LABELS} describes")
    return ds.x_train.transpose(0, 2, 3, 1)


def gallery(a, b, t: pd.DataFrame, results_dir: Path, n: int = 16) -> str:
    """The n examples whose exposure rose most from B (dense) to A, with class, memorisation and exposure."""
    name = f"gallery_{a.name}__{b.name}_{a.res['dataset']}"
    png, csv = paths.per_example_figure(results_dir, name)
    try:
        images = pool_images(a.sig.exp_dir, a.sig.labels)
    except (UsageError, OSError, ValueError, TypeError) as e:
        return f"skipped: {e}"
    top = t[np.isfinite(t["change"])].nlargest(n, "change")
    save_text(top[["index", "label", "dense_mem", "exposure_b", "exposure_a", "change", "rose"]].to_csv(index=False), csv)
    cols = 4
    fig, axes = plt.subplots(int(np.ceil(len(top) / cols)) or 1, cols, figsize=(2.3 * cols, 2.6 * np.ceil(len(top) / cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, r) in zip(axes.flat, top.iterrows()):
        img = images[int(r["index"])]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        ax.set_title(f"#{int(r['index'])} class {int(r['label'])}\nmem {r['dense_mem']:.2f}  "
                     f"exp {r['exposure_b']:.1f}->{r['exposure_a']:.1f}", fontsize=7)
    fig.suptitle(f"exposure rose most: {a.name} against {b.name}", fontsize=9)
    save_figure(fig, png)
    return str(png)


def make_all(cfgs: list, tables: dict, pair_tables: dict, dense: dict, results_dir: Path) -> dict[str, str]:
    """Every figure: {name: the PNG's path, or 'skipped: why'}."""
    out = {"mem_vs_change": mem_vs_change(pair_tables, results_dir),
           "exposure_by_sparsity": exposure_by_sparsity(cfgs, tables, dense, results_dir)}
    by_name = {(c.name, c.res["dataset"]): c for c in cfgs}
    for (a, b, ds), t in pair_tables.items():
        if dense.get(ds) is not None and dense[ds].name == b:
            out[f"gallery_{a}__{b}_{ds}"] = gallery(by_name[a, ds], by_name[b, ds], t, results_dir)
    return out
