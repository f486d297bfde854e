"""results/report.md: the study in one page a person reads (Markdown, the PNGs beside it in plots/).

What was trained (configurations, measured sparsity, accuracy), the leakage of every configuration
with intervals, the paired differences with the significant ones marked, the privacy-utility and
per-class figures, and the commands that reproduce it. Built by mia/unified_mia_evaluation.py (hence
at the end of train.py) and by mia/compare.py, from the tables they wrote: nothing here recomputes
an attack or a statistic, it only lays out what the CSVs hold.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from configs import paths
from configs.config import command_line, load_config
from mia import plots
from mia.evaluate import experiment_id
from utils.errors import UsageError
from utils.io import load_json, save_text

HEADLINE = "lira"  # the attack the summaries single out when it was run (the strongest of the suite)
METRIC_NAMES = {"auc": "AUC", "tpr_at_1pct_fpr": "TPR at 1% FPR", "tpr_at_0.1pct_fpr": "TPR at 0.1% FPR",
                "test_acc": "test accuracy"}


# -- figures --------------------------------------------------------------------------------------------

def roc_of(summary: dict) -> dict:
    """The ROC an attack's summary holds (one target's curve) with that target's own AUC and FPR floor,
    so the plot labels what it draws rather than the mean AUC over targets."""
    own = summary["per_target"][str(summary["roc"]["target"])]
    return {**summary["roc"], "auc": own["auc"], "min_fpr": own["min_fpr"]}


def make_plots(df: pd.DataFrame, results: list[dict], plot_dir: Path, study=None) -> dict[str, Path]:
    """Every figure of the evaluation, by name: privacy-utility (AUC, TPR at 0.1% FPR; error bars from the
    study's intervals when given), the heatmap, per-class AUC (with a study), one ROC per experiment."""
    if df.empty:
        return {}
    iv = None if study is None else study.intervals
    out = {f"privacy_utility_{m}": plots.privacy_utility(df, m, plot_dir / f"privacy_utility_{m}.png", iv)
           for m in ("auc", "tpr_at_0.1pct_fpr")}
    out["heatmap_auc"] = plots.heatmap(df, "auc", plot_dir / "heatmap_auc.png")
    if study is not None and not study.per_class.empty:
        out["per_class_auc"] = plots.per_class(study.per_class, headline(df), plot_dir / "per_class_auc.png")
    for r in results:
        rocs = {a: roc_of(v) for a, v in r["attacks"].items()}
        if rocs:
            out[f"roc_{experiment_id(r)}"] = plots.roc_curves(f"{r['experiment']} ({r['dataset']})", rocs,
                                                              plot_dir / f"roc_{experiment_id(r)}.png")
    return out


def headline(df: pd.DataFrame) -> str:
    """LiRA when it ran, else the attack with the highest mean AUC over configurations."""
    attacks = plots.attacks_in(df, "auc")
    if HEADLINE in attacks:
        return HEADLINE
    return max(attacks, key=lambda a: df[f"{a}_auc"].mean()) if attacks else ""


# -- tables ---------------------------------------------------------------------------------------------

def _num(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def _ci(value, low, high, signed: bool = False) -> str:
    """'0.612 [0.581, 0.640]' (signed: '+0.012 [-0.003, +0.027]'); the value alone without an interval."""
    f = "{:+.3f}" if signed else "{:.3f}"
    v = "–" if value is None or pd.isna(value) else f.format(value)
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return v
    return f"{v} [{f.format(low)}, {f.format(high)}]"


def markdown(df: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs tabulate; this needs nothing)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def trained_table(training: pd.DataFrame) -> str:
    g = training.groupby(["experiment", "dataset"], sort=False)
    t = pd.DataFrame({
        "configuration": [e for e, _ in g.groups],
        "dataset": [d for _, d in g.groups],
        "method": g["method"].first().values,
        "sparsity (asked)": g["sparsity"].first().map(lambda s: _num(s, 2)).values,
        "sparsity (measured)": g["measured_sparsity"].mean().map(lambda s: _num(s, 4)).values,
        "models": g.size().values,
        "train acc": g["train_acc"].mean().map(_num).values,
        "test acc (mean ± std)": [f"{_num(m)} ± {_num(s)}" for m, s in zip(g["test_acc"].mean(), g["test_acc"].std())],
    })
    return markdown(t)


def attack_grid(attacks: pd.Series, columns: pd.Series, cells: pd.Series) -> str:
    """A pipe table with attacks as rows and `columns` as columns, both in their first-seen order."""
    grid = pd.DataFrame({"attack": attacks, "col": columns, "cell": cells}).pivot(index="attack", columns="col", values="cell")
    grid = grid[list(dict.fromkeys(columns))].loc[list(dict.fromkeys(attacks))]
    grid.columns.name = None
    return markdown(grid.reset_index())


def leakage_table(intervals: pd.DataFrame, metric: str) -> str:
    """Attacks as rows, configurations as columns: value [interval]; '*' = FPR level below the floor."""
    d = intervals[intervals["metric"] == metric]
    if d.empty:
        return ""
    cell = d.apply(lambda r: _ci(r["value"], r["ci_low"], r["ci_high"]) + (" *" if r["below_floor"] else ""), axis=1)
    return attack_grid(d["attack"], plots.config_labels(d), cell)


def _mark(r) -> str:
    return _ci(r["difference"], r["ci_low"], r["ci_high"], signed=True) + (" **✱**" if r["excludes_zero"] else "")


def paired_summary(paired: pd.DataFrame, attack: str) -> str:
    """One row per pair: test accuracy and the headline attack's differences, and how many attacks'
    AUC differences are significant, in which direction."""
    rows = []
    for pair, g in paired.groupby("pair", sort=False):
        def cell(a, m):
            r = g[(g["attack"] == a) & (g["metric"] == m)]
            return _mark(r.iloc[0]) if len(r) else "–"
        auc = g[g["metric"] == "auc"]
        sig = auc[auc["excludes_zero"] == True]  # noqa: E712 (a column of bools and NaN)
        up, down = sig[sig["difference"] > 0]["attack"].tolist(), sig[sig["difference"] < 0]["attack"].tolist()
        rows.append({"pair (A - B)": pair, "Δ test acc": cell("", "test_acc"), f"Δ {attack} AUC": cell(attack, "auc"),
                     f"Δ {attack} TPR@1%FPR": cell(attack, "tpr_at_1pct_fpr"),
                     "attacks with significant Δ AUC": f"{len(sig)} of {len(auc)}"
                     + (f"; A higher: {', '.join(up)}" if up else "") + (f"; A lower: {', '.join(down)}" if down else "")})
    return markdown(pd.DataFrame(rows))


def paired_grid(paired: pd.DataFrame, metric: str) -> str:
    d = paired[paired["metric"] == metric]
    if d.empty:
        return ""
    return attack_grid(d["attack"], d["pair"], d.apply(_mark, axis=1))


def per_class_table(per_class: pd.DataFrame, attack: str) -> str:
    d = per_class[per_class["attack"] == attack]
    cols = [c for c in d.columns if c.startswith("auc_class_")]
    worst = d[cols].astype(float).idxmax(axis=1).str.replace("auc_class_", "", regex=False)
    best = d[cols].astype(float).idxmin(axis=1).str.replace("auc_class_", "", regex=False)
    t = pd.DataFrame({"configuration": d["experiment"], "min": d["auc_min"].map(_num), "max": d["auc_max"].map(_num),
                      "range": d["auc_range"].map(_num), "std": d["auc_std"].map(_num),
                      "most exposed class": worst, "least exposed class": best})
    return markdown(t)


# -- the page -------------------------------------------------------------------------------------------

def reproduce_commands(results: list[dict], commands: list[str], results_dir: Path) -> list[str]:
    """The command that built this report, then each configuration's training command (from its
    recorded config.json) and the evaluation and comparison commands that rebuild the rest."""
    out = list(commands)
    runs = set()
    for r in results:
        cfg_file = Path(r.get("exp_dir", "")) / paths.CONFIG
        try:
            cfg = load_config(cfg_file)
            out.append(command_line(cfg))
            runs.add(cfg.runs_dir)
        except (OSError, UsageError, TypeError, ValueError):  # moved, or not made by this pipeline's trainer
            out.append(f"# {r['experiment']} ({r['dataset']}): no usable {cfg_file}; its training command is unknown")
    targets = [int(t) for t in results[0].get("targets", [0])] if results else [0]
    t = "all" if len(targets) > 1 and len(targets) == results[0].get("num_models") else ",".join(map(str, targets))
    for rd in sorted(runs):
        out.append(f"python mia/unified_mia_evaluation.py --runs-dir {rd} --results-dir {results_dir} --targets {t}")
    out.append(f"python mia/compare.py --results-dir {results_dir}")
    return list(dict.fromkeys(out))


def render(df: pd.DataFrame, training: pd.DataFrame, results: list[dict], study, figures: dict[str, Path],
           results_dir: Path, commands: list[str]) -> str:
    attack = headline(df)
    n_targets = max((len(r["targets"]) for r in results), default=0)
    level = int(round(100 * (study.intervals["level"].iloc[0] if not study.intervals.empty else 0.95)))
    n_boot = int(study.intervals["n_boot"].iloc[0]) if not study.intervals.empty else 0

    def fig(name: str, alt: str) -> str:
        return f"![{alt}]({figures[name].relative_to(results_dir).as_posix()})" if name in figures else ""

    s = [f"# Membership-inference study: {len(df)} configuration(s), {', '.join(sorted(df['dataset'].astype(str).unique()))}",
         "", f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC from the tables in this "
         f"directory. Attacks: {', '.join(plots.attacks_in(df, 'auc'))}; {n_targets} target model(s) per configuration "
         "(leave-one-out: every other model of the configuration is a shadow).", "",
         "## What was trained", "", trained_table(training), "",
         "## Leakage of each configuration", "",
         f"Mean over the target(s), with a {level}% percentile bootstrap interval ({n_boot} resamples of the pool's "
         "members and non-members, and of the targets when there are several). AUC 0.5 is chance. "
         "`*`: the FPR level is below 1/#non-members, so that TPR was not measured (it is the TPR with no false positive).",
         ""]
    for metric in ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):
        rows = study.intervals[study.intervals["metric"] == metric]
        if len(rows) and rows["below_floor"].astype(bool).all():  # a table of unmeasured figures says nothing
            s += [f"{METRIC_NAMES[metric]}: below 1/#non-members for every target, not measured "
                  f"(in [{paths.INTERVALS}]({paths.INTERVALS}), flagged).", ""]
        elif len(rows):
            s += [f"### {METRIC_NAMES[metric]}", "", leakage_table(study.intervals, metric), ""]
    s += [fig("privacy_utility_auc", "privacy-utility"), "",
          "Test accuracy against each attack's AUC (horizontal bars: the interval above; vertical bars: the std of "
          "test accuracy over the targets).", ""]
    s += ["## Paired differences", ""]
    if study.paired.empty:
        s += ["No pair to compare (a study needs two configurations trained on the same keep matrix).", ""]
    else:
        s += ["Model i of every configuration trained on the same examples, so each difference A - B is computed on the "
              f"same resampled examples (and targets) for both: a paired {level}% interval. **✱**: the interval "
              "excludes 0. Positive: A leaks more (or is more accurate).", "",
              paired_summary(study.paired, attack), "", "### Δ AUC of every attack", "", paired_grid(study.paired, "auc"), "",
              f"All metrics: [{paths.PAIRED}]({paths.PAIRED}).", ""]
    if not study.per_class.empty:
        s += ["## Per-class leakage", "", f"{attack} AUC within each true class (mean over the targets).", "",
              fig("per_class_auc", "per-class AUC"), "", per_class_table(study.per_class, attack), "",
              f"Every attack: [{paths.PER_CLASS}]({paths.PER_CLASS}).", ""]
    s += ["## More figures", "", fig("heatmap_auc", "AUC heatmap"), ""]
    rocs = [k for k in figures if k.startswith("roc_")]
    if rocs:
        s += ["ROC curves (log-log, one target each): " + ", ".join(
            f"[{k[4:]}]({figures[k].relative_to(results_dir).as_posix()})" for k in rocs), ""]
    if study.failures:
        s += ["## Problems", "", *[f"- {f}" for f in study.failures], ""]
    s += ["## Reproduce", "", "```", *reproduce_commands(results, commands, results_dir), "```", ""]
    return "\n".join(s)


def build(results_dir: Path, df: pd.DataFrame, training: pd.DataFrame, results: list[dict], study,
          commands: list[str]) -> Path:
    """Figures into results_dir/plots and results_dir/report.md (atomic writes)."""
    results_dir = Path(results_dir)
    figures = make_plots(df, results, results_dir / paths.PLOTS, study)
    out = results_dir / paths.REPORT
    save_text(render(df, training, results, study, figures, results_dir, commands), out)
    return out


def build_from_disk(results_dir: Path, study, commands: list[str]) -> Path:
    """build() from the unified evaluation's files (mia/compare.py rebuilds the report this way)."""
    unified = paths.mia_results_dir(results_dir, "unified")
    results = [r for f in sorted(unified.glob("*.json")) if "attacks" in (r := load_json(f))]
    df = pd.read_csv(unified / f"{paths.COMPREHENSIVE}.csv")
    order = {experiment_id(r): i for i, r in enumerate(df.to_dict("records"))}  # the study's order, as train.py wrote it
    results.sort(key=lambda r: order.get(experiment_id(r), len(order)))
    return build(results_dir, df, pd.read_csv(unified / paths.TRAINING_RESULTS), results, study, commands)


def summary_line(study, report: Path) -> str:
    sig = int((study.paired["excludes_zero"] == True).sum()) if not study.paired.empty else 0  # noqa: E712
    return (f"report: {report} ({len(study.paired)} paired difference(s), {sig} significant; "
            f"{len(study.intervals)} interval(s))")
