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

from analysis import findings, plots, section as per_example_section
from artifacts import paths
from configs.config import command_line, load_config
from artifacts.schema import Study, experiment_id
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


def make_plots(df: pd.DataFrame, results: list[dict], plot_dir: Path, study: Study | None = None,
               training: pd.DataFrame | None = None) -> dict[str, Path]:
    """Every figure of the evaluation, by name: the sparsity sweep (with a study, the training table and a
    pruned configuration), privacy-utility (AUC, TPR at 0.1% FPR; error bars from the study's intervals when
    given), the heatmap, per-class AUC (with a study), one ROC per experiment."""
    if df.empty:
        return {}
    iv = None if study is None else study.intervals
    out = {}
    if iv is not None and training is not None and not iv.empty and (iv["sparsity"].astype(float) > 0).any():
        out["sparsity_sweep"] = plots.sparsity_sweep(iv, training, headline(df), plot_dir / "sparsity_sweep.png")
    out |= {f"privacy_utility_{m}": plots.privacy_utility(df, m, plot_dir / f"privacy_utility_{m}.png", iv)
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


def pick_headline(mean_auc: dict[str, float]) -> str:
    """LiRA when it ran, else the attack with the highest mean AUC over configurations ({attack: AUC})."""
    if HEADLINE in mean_auc:
        return HEADLINE
    return max(mean_auc, key=mean_auc.get) if mean_auc else ""


def headline(df: pd.DataFrame) -> str:
    return pick_headline({a: df[f"{a}_auc"].mean() for a in plots.attacks_in(df, "auc")})


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
    chance = at_chance_models(training)
    if chance:  # the column only where a model is flagged: a study that learned is not cluttered
        t["at chance"] = [", ".join(map(str, chance.get(e, []))) or "-" for e in t["configuration"]]
    return markdown(t)


def at_chance_models(training: pd.DataFrame) -> dict[str, list[int]]:
    """configuration -> the indices of its models whose validation accuracy never left chance (their
    summaries' at_chance, training/model_io.at_chance); tables written before the flag have none."""
    if "at_chance" not in training:
        return {}
    flagged = training[training["at_chance"].map(_is)]
    return {e: sorted(int(i) for i in g["model_index"]) for e, g in flagged.groupby("experiment", sort=False)}


def at_chance_text(training: pd.DataFrame) -> list[str]:
    """The warning under the training table when a model is at chance: kept, not refused, but its attacks
    measure a model that learned nothing (e.g. DP-SGD with much noise, a learning rate far too low)."""
    chance = at_chance_models(training)
    if not chance:
        return []
    which = "; ".join(f"{e}: model(s) {', '.join(map(str, idx))}" for e, idx in chance.items())
    return [f"**At chance**: the validation accuracy of {which} never left chance (within 3 standard errors of "
            "1/classes). Their leakage is reported but measures models that learned nothing: a low AUC there is "
            "not evidence that the method protects.", ""]


def attack_grid(attacks: pd.Series, columns: pd.Series, cells: pd.Series) -> str:
    """A pipe table with attacks as rows and `columns` as columns, both in their first-seen order."""
    grid = pd.DataFrame({"attack": attacks, "col": columns, "cell": cells}).pivot(index="attack", columns="col", values="cell")
    grid = grid[list(dict.fromkeys(columns))].loc[list(dict.fromkeys(attacks))]
    grid.columns.name = None
    return markdown(grid.reset_index())


def _is(v) -> bool:
    """A flag cell: True, numpy's True or 1; False for False, NaN, None or a missing column."""
    return v is not None and not pd.isna(v) and bool(v)


def _flags(r) -> str:
    """' *' below the FPR floor (not measured), ' †' coarse (fewer than 5 allowed false positives)."""
    return " *" if _is(r.get("below_floor")) else (" †" if _is(r.get("coarse")) else "")


def leakage_table(intervals: pd.DataFrame, metric: str) -> str:
    """Attacks as rows, configurations as columns: value [interval]; '*' below the floor, '†' coarse."""
    d = intervals[intervals["metric"] == metric]
    if d.empty:
        return ""
    cell = d.apply(lambda r: _ci(r["value"], r["ci_low"], r["ci_high"]) + _flags(r), axis=1)
    return attack_grid(d["attack"], plots.config_labels(d), cell)


def _mark(r) -> str:
    """The difference with its raw interval, **✱** when significant after the family's correction."""
    return (_ci(r["difference"], r["ci_low"], r["ci_high"], signed=True) + _flags(r)
            + (" **✱**" if _is(r.get("significant")) else ""))


def _covers(g: pd.DataFrame) -> str:
    n = int(g["num_targets"].max())
    return "examples only (1 target)" if n == 1 else f"examples and training seeds ({n} targets)"


def paired_summary(paired: pd.DataFrame, attack: str) -> str:
    """One row per pair: test accuracy and the headline attack's differences, what the intervals cover,
    and how many attacks' AUC differences are significant after the correction, in which direction."""
    rows = []
    for pair, g in paired.groupby("pair", sort=False):
        def cell(a, m):
            r = g[(g["attack"] == a) & (g["metric"] == m)]
            return _mark(r.iloc[0]) if len(r) else "–"
        auc = g[g["metric"] == "auc"]
        sig = auc[auc["significant"] == True]  # noqa: E712 (a column of bools and NaN)
        up, down = sig[sig["difference"] > 0]["attack"].tolist(), sig[sig["difference"] < 0]["attack"].tolist()
        rows.append({"pair (A - B)": pair, "intervals cover": _covers(g), "Δ test acc": cell("", "test_acc"),
                     f"Δ {attack} AUC": cell(attack, "auc"), f"Δ {attack} TPR@1%FPR": cell(attack, "tpr_at_1pct_fpr"),
                     "attacks with significant Δ AUC (corrected)": f"{len(sig)} of {len(auc)}"
                     + (f"; A higher: {', '.join(up)}" if up else "") + (f"; A lower: {', '.join(down)}" if down else "")})
    return markdown(pd.DataFrame(rows))


def family_text(paired: pd.DataFrame, level: int) -> str:
    """What the family is and how it is corrected: what a **✱** promises."""
    tested = int((paired["family"] != "").sum())
    none = len(paired) - tested
    return (f"**✱**: significant after correcting for the number of comparisons, at {100 - level}%: all {tested} tested "
            f"cells of this report (test accuracy and every attack's metrics, every pair) are one family, "
            f"Benjamini-Hochberg-adjusted: at most {100 - level}% of the marked cells are expected to be false, and "
            f"when nothing differs a study gets any mark at all at most {100 - level}% of the time. {none} cell(s) below "
            f"the FPR floor (`*`) or coarse (`†`: fewer than 5 allowed false positives, a TPR biased upward whose "
            f"resampled interval is too narrow to test) are in no family and never marked. Intervals are raw "
            f"(unadjusted); p-values raw and adjusted are in [{paths.PAIRED}]({paths.PAIRED}). The shadow models' "
            f"draw has no term of its own in an interval (the targets share most of their shadows; docs/attacks.md); "
            f"the A/A check on real models measures what that leaves out (docs/benchmarks.md).")


def paired_grid(paired: pd.DataFrame, metric: str) -> str:
    d = paired[paired["metric"] == metric]
    if d.empty:
        return ""
    return attack_grid(d["attack"], d["pair"], d.apply(_mark, axis=1))


def _class_cell(r, k: int) -> str:
    """'0.61 [0.52, 0.70] (48/52)': the class's AUC, interval, members/non-members; no interval unranked."""
    return (_ci(r[f"auc_class_{k}"], r[f"ci_low_class_{k}"], r[f"ci_high_class_{k}"])
            + f" ({int(r[f'members_class_{k}'])}/{int(r[f'nonmembers_class_{k}'])})")


def per_class_table(per_class: pd.DataFrame, attack: str) -> str:
    """One row per configuration: classes ranked, spread over them, the heterogeneity test and, only
    when it rejects, the most / least exposed class with their AUC, interval and counts."""
    d = per_class[per_class["attack"] == attack]
    num_classes = len([c for c in d.columns if c.startswith("auc_class_")])
    rows = []
    for _, r in d.iterrows():
        if pd.notna(r["most_exposed"]) and str(r["most_exposed"]) != "":
            most, least = (f"{int(float(r[k]))}: {_class_cell(r, int(float(r[k])))}" for k in ("most_exposed", "least_exposed"))
        else:
            why = "fewer than 2 classes ranked" if r["classes_ranked"] < 2 else "no difference beyond noise"
            most = least = f"– ({why})"
        rows.append({"configuration": r["experiment"], "classes ranked": f"{int(r['classes_ranked'])} of {num_classes}",
                     "min": _num(r["auc_min"]), "max": _num(r["auc_max"]), "range": _num(r["auc_range"]),
                     "heterogeneity p (adjusted)": _num(r["heterogeneity_p_adjusted"]),
                     "most exposed class": most, "least exposed class": least})
    return markdown(pd.DataFrame(rows))


# -- the page -------------------------------------------------------------------------------------------

def epsilon_section(df: pd.DataFrame) -> list[str]:
    """What the attacks prove about epsilon (mia/epsilon.py): each attack's bound per configuration, mean
    over the targets, and the largest per configuration. Empty when the table has no bound."""
    attacks = plots.attacks_in(df, "eps_lower_bound")
    if not attacks:
        return []
    long = pd.DataFrame([(a, label, _num(v, 2)) for a in attacks
                         for label, v in zip(plots.config_labels(df), df[f"{a}_eps_lower_bound"])],
                        columns=["attack", "config", "cell"])
    bounds = df[[f"{a}_eps_lower_bound" for a in attacks]].astype(float)
    dp = df["dp_epsilon"].astype(float) if "dp_epsilon" in df else pd.Series(np.nan, index=df.index)
    accountant = [f"{label} {e:.2f}" for label, e in zip(plots.config_labels(df), dp) if np.isfinite(e)]
    best = [f"{label} {b:.2f} ({attacks[i]})" for label, b, i in
            zip(plots.config_labels(df), bounds.max(axis=1), bounds.fillna(-1).to_numpy().argmax(axis=1))]
    return ["## What the attacks prove about epsilon", "",
            "An empirical lower bound on epsilon (Jagielski et al. 2020; Nasr et al. 2021) from each attack's rule at its "
            "shadow-calibrated threshold: max(log((TPR - delta) / FPR), log((1 - FPR - delta) / (1 - TPR))) with 95% "
            "Clopper-Pearson bounds on TPR (lower) and FPR (upper), delta = 1/#members rounded down to a power of 10; "
            "mean over the targets. 0: the attack proves nothing. Largest per configuration: " + "; ".join(best) + "."
            + (" The DP models' accountant epsilon (an upper bound, at their delta): " + "; ".join(accountant) + "."
               if accountant else ""), "",
            attack_grid(long["attack"], long["config"], long["cell"]), ""]


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


def findings_section(found: pd.DataFrame, attack: str, level: int, figure: str) -> list[str]:
    """The report's first section (analysis/findings.py): one sentence per claim, the sweep figure, a table per
    expectation."""
    if found.empty:
        return ["## Findings", "", "No finding can be stated: the study has no pair of configurations trained on the "
                "same keep matrix (it needs dense and pruned configurations).", ""]
    many = found["dataset"].nunique() > 1
    s = ["## Findings", "", findings.intro(attack, level), ""]
    s += [f"- {f'{ds}: ' if many else ''}{sentence}" for ds, sentence in findings.claim_sentences(found)]
    s += ["", figure, "", "Leakage and accuracy against sparsity (intervals as in the tables below; dense: the band).", ""]
    for ds, title, table in findings.tables(found, attack):
        s += [f"### {title}{f' ({ds})' if many else ''}", "", markdown(table), ""]
    s += [f"All findings: [{paths.FINDINGS}]({paths.FINDINGS}).", ""]
    return s


def render(df: pd.DataFrame, training: pd.DataFrame, results: list[dict], study: Study, figures: dict[str, Path],
           results_dir: Path, commands: list[str], found: pd.DataFrame | None = None) -> str:
    attack = headline(df)
    n_targets = max((len(r["targets"]) for r in results), default=0)
    level = int(round(100 * (study.intervals["level"].iloc[0] if not study.intervals.empty else 0.95)))
    min_class = study.settings.min_class_count
    n_boot = int(study.intervals["n_boot"].iloc[0]) if not study.intervals.empty else 0

    def fig(name: str, alt: str) -> str:
        return f"![{alt}]({figures[name].relative_to(results_dir).as_posix()})" if name in figures else ""

    s = [f"# Membership-inference study: {len(df)} configuration(s), {', '.join(sorted(df['dataset'].astype(str).unique()))}",
         "", f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC from the tables in this "
         f"directory. Attacks: {', '.join(plots.attacks_in(df, 'auc'))}; {n_targets} target model(s) per configuration "
         "(leave-one-out: every other model of the configuration is a shadow).", ""]
    if found is not None:
        s += findings_section(found, attack, level, fig("sparsity_sweep", "leakage and accuracy against sparsity"))
    s += ["## What was trained", "", trained_table(training), "", *at_chance_text(training),
          "## Leakage of each configuration", "",
         f"Mean over the target(s), with a {level}% interval: {n_boot} resamples of the pool's examples, shared by every "
         "target, and with several targets their spread (a t interval; docs/attacks.md). "
         + ("With one target it covers the examples only, not the training seed. " if n_targets == 1 else "")
         + "AUC 0.5 is chance. `*`: the FPR level is below 1/#non-members, so that TPR was not measured (it is the TPR "
         "with no false positive); `†`: coarse, fewer than 5 false positives allowed at that level.",
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
              f"same resampled examples for both: a paired {level}% interval. Positive: A leaks more (or is more accurate). "
              + ("With one target an interval covers the examples only: the difference also holds the two models' seeds, "
                 "so it says nothing about the methods until several targets are evaluated (`--targets all`). "
                 if n_targets == 1 else ""), "", family_text(study.paired, level), "",
              paired_summary(study.paired, attack), "", "### Δ AUC of every attack", "", paired_grid(study.paired, "auc"), "",
              f"All metrics: [{paths.PAIRED}]({paths.PAIRED}).", ""]
    if not study.per_class.empty:
        s += ["## Per-class leakage", "", f"{attack} AUC within each true class (mean over the targets). A class is ranked "
              f"with at least {min_class} members and {min_class} non-members in every target; the most and least exposed "
              "classes are named only when a permutation test (class labels shuffled within members and within "
              f"non-members) finds the ranked classes differ, Holm-adjusted over the configurations, at {100 - level}%. "
              "Cells: AUC [interval] (members/non-members).", "",
              fig("per_class_auc", "per-class AUC"), "", per_class_table(study.per_class, attack), "",
              f"Every attack: [{paths.PER_CLASS}]({paths.PER_CLASS}).", ""]
    s += epsilon_section(df)
    s += per_example_section.lines(results_dir, markdown)  # analysis/stage.py's tables, or how to make them
    s += ["## More figures", "", fig("heatmap_auc", "AUC heatmap"), ""]
    rocs = [k for k in figures if k.startswith("roc_")]
    if rocs:
        s += ["ROC curves (log-log, one target each): " + ", ".join(
            f"[{k[4:]}]({figures[k].relative_to(results_dir).as_posix()})" for k in rocs), ""]
    if study.failures:
        s += ["## Problems", "", *[f"- {f}" for f in study.failures], ""]
    s += ["## Reproduce", "", "```", *reproduce_commands(results, commands, results_dir), "```", ""]
    return "\n".join(s)


def build(results_dir: Path, df: pd.DataFrame, training: pd.DataFrame, results: list[dict], study: Study,
          commands: list[str]) -> Path:
    """Figures into results_dir/plots and results_dir/report.md (atomic writes)."""
    results_dir = Path(results_dir)
    figures = make_plots(df, results, results_dir / paths.PLOTS, study, training)
    level = study.intervals["level"].iloc[0] if not study.intervals.empty else 0.95
    found = findings.study_findings(study.paired, study.intervals, training, headline(df), level)
    save_text(found.to_csv(index=False), results_dir / paths.FINDINGS)
    out = results_dir / paths.REPORT
    save_text(render(df, training, results, study, figures, results_dir, commands, found), out)
    return out


def build_from_disk(results_dir: Path, study: Study, commands: list[str]) -> Path:
    """build() from the unified evaluation's files (mia/compare.py rebuilds the report this way)."""
    unified = paths.mia_results_dir(results_dir, "unified")
    results = [r for f in sorted(unified.glob("*.json")) if "attacks" in (r := load_json(f))]
    df = pd.read_csv(unified / f"{paths.COMPREHENSIVE}.csv")
    order = {experiment_id(r): i for i, r in enumerate(df.to_dict("records"))}  # the study's order, as train.py wrote it
    results.sort(key=lambda r: order.get(experiment_id(r), len(order)))
    return build(results_dir, df, pd.read_csv(unified / paths.TRAINING_RESULTS), results, study, commands)


def summary_line(study: Study, report: Path) -> str:
    sig = int((study.paired["significant"] == True).sum()) if not study.paired.empty else 0  # noqa: E712
    return (f"report: {report} ({len(study.paired)} paired difference(s), {sig} significant after correction; "
            f"{len(study.intervals)} interval(s))")
