"""Which configuration leaks more, with confidence: paired comparisons of a study's configurations,
each configuration's own intervals and its per-class leakage, from the scores the evaluation saved
(docs/attacks.md, "Paired comparisons"). Run by mia/unified_mia_evaluation.py and by the script
mia/compare.py, which also rebuilds the report (analysis/report.py).

Reads <results-dir>/mia/unified/<experiment>_<dataset>.json and the scores/ beside them (written by
mia/unified_mia_evaluation.py, which train.py runs, and which also runs this step). Writes into
--results-dir:
  attack_intervals.csv    experiment, method, sparsity, dataset, attack, metric, value, ci_low, ci_high, se,
                          df, level, n_boot, num_targets, covers, below_floor, coarse
  paired_comparisons.csv  pair, a, b, dataset, attack, metric, a_value, b_value, difference, ci_low, ci_high,
                          se, df, p_value, excludes_zero (raw), below_floor, coarse, family, p_adjusted,
                          significant (corrected), level, n_boot, num_targets, covers (attack empty for test_acc)
  per_class_auc.csv       experiment, method, sparsity, dataset, attack, num_targets, classes_ranked,
                          heterogeneity_p, heterogeneity_p_adjusted, most_exposed, least_exposed, auc_min,
                          auc_max, auc_std, auc_range (over the ranked classes), then per class c:
                          auc_class_c (mean over targets), ci_low_class_c, ci_high_class_c, members_class_c,
                          nonmembers_class_c (the smallest count over the targets)
Default pairs, within each dataset: every pruned configuration against dense, dpf against static at
each sparsity, and each method at each sparsity against itself at the next lower sparsity. Differences are A - B (the first named minus the second): positive = A leaks more.
The family (docs/attacks.md, "Multiplicity"): every tested cell of the report (test accuracy and every
attack's metrics, every pair), Benjamini-Hochberg-adjusted; a cell below the FPR floor or coarse is in no
family and never significant.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import bootstrap as bs
from artifacts import paths
from artifacts.rundir import same_membership
from artifacts.schema import Settings, Study, experiment_id
from mia.metrics import FPR_LEVELS, below_fpr_floor
from utils.errors import UsageError
from utils.io import load_json, load_npy, save_text

INTERVAL_COLS = ["experiment", "method", "sparsity", "dataset", "attack", "metric", "value", "ci_low", "ci_high",
                 "se", "df", "level", "n_boot", "num_targets", "covers", "below_floor", "coarse"]
PAIRED_COLS = ["pair", "a", "b", "dataset", "attack", "metric", "a_value", "b_value", "difference", "ci_low",
               "ci_high", "se", "df", "p_value", "excludes_zero", "below_floor", "coarse", "family", "p_adjusted",
               "significant", "level", "n_boot", "num_targets", "covers"]
ID_COLS = ["experiment", "method", "sparsity", "dataset"]
# A TPR resting on fewer allowed false positives than this moves in steps of a whole example and is
# biased upward (the best of a few noisy points; at 1-2 false positives about 1.7x the population
# value): flagged "coarse", measured and shown with its interval, but never tested: its bootstrap
# distribution is that of an extreme order statistic, lumpy and too narrow (docs/attacks.md).
COARSE_FALSE_POSITIVES = 5
# One family for every mark the report makes, Benjamini-Hochberg: under a global null (an A/A study) a
# mark anywhere in at most 1 - level of studies, and at most that share of false marks among the marked
# otherwise. One family per kind would give each kind its own 1 - level, and the report promises no mark
# at all in a level share of A/A studies (docs/attacks.md, "Multiplicity").
FAMILY = "report"


@dataclass
class Evaluated:
    """One configuration's evaluation as results/ holds it: its JSON and its saved scores."""
    res: dict
    scores_dir: Path

    @property
    def name(self) -> str:
        return str(self.res["experiment"])

    @property
    def key(self) -> str:
        """The experiment id (<experiment>_<dataset>), the name of its scores directory."""
        return self.scores_dir.name

    @property
    def ident(self) -> dict:
        return {k: self.res.get(k) for k in ID_COLS}

    @property
    def targets(self) -> list[int]:
        return [int(t) for t in self.res["targets"]]

    @property
    def attacks(self) -> list[str]:
        return list(self.res["attacks"])

    def _load(self, f: Path) -> np.ndarray:
        if not f.exists():
            raise UsageError(f"{f} missing: re-run mia/unified_mia_evaluation.py (it saves every attack's scores)")
        return load_npy(f)

    def members(self) -> list[np.ndarray]:
        return [self._load(paths.members_file(self.scores_dir, t)).astype(bool) for t in self.targets]

    def labels(self) -> np.ndarray:
        return self._load(self.scores_dir / paths.LABELS)

    def scores(self, attack: str) -> list[np.ndarray]:
        return [self._load(paths.score_file(self.scores_dir, t, attack)) for t in self.targets]

    def test_acc(self, target: int) -> float | None:
        return (self.res.get("model_test_acc") or {}).get(str(target))


def load_evaluations(suite_dir: Path) -> list[Evaluated]:
    """Every experiment of an evaluation directory (its per-experiment JSON files), sorted by name."""
    files = sorted(f for f in Path(suite_dir).glob("*.json"))
    evals = [Evaluated(res, paths.scores_dir(suite_dir, f.stem)) for f in files if "attacks" in (res := load_json(f))]
    if not evals:
        raise UsageError(f"no evaluation in {suite_dir}; run mia/unified_mia_evaluation.py (or train.py) first")
    return evals


# -- which pairs ---------------------------------------------------------------------------------------

def default_pairs(evals: list[Evaluated]) -> list[tuple[Evaluated, Evaluated]]:
    """Within each dataset: each pruned configuration minus dense, then at each sparsity each method minus
    the methods its registry entry pairs it with (pruning/methods.py pairs_with: dpf - static,
    finetune - static, filter pruners - finetune), then each method's sparsity steps (sparsity_steps)."""
    from pruning.methods import PRUNING_METHODS

    pairs = []
    for ds in dict.fromkeys(e.res["dataset"] for e in evals):
        group = [e for e in evals if e.res["dataset"] == ds]
        dense = [e for e in group if e.res["method"] == "dense"]
        pairs += [(e, dense[0]) for e in group if dense and e.res["method"] != "dense"]
        # each defended configuration minus its undefended one, same method and sparsity (dense+ppb - dense is
        # among the pairs above); a defended configuration's method is '<method>+<defense>' (paths.method_label)
        plain = {(e.res["method"], e.res["sparsity"]): e for e in group if e.res.get("defense", "none") == "none"}
        for e in group:
            d = e.res.get("defense", "none")
            base = e.res["method"].removesuffix(f"+{d}")
            if d != "none" and base != "dense" and (base, e.res["sparsity"]) in plain:
                pairs.append((e, plain[base, e.res["sparsity"]]))
        by = {(e.res["method"], e.res["sparsity"]): e for e in group}
        pairs += [(by[m, s], by[o, s]) for (m, s) in by if m in PRUNING_METHODS
                  for o in PRUNING_METHODS[m].pairs_with if (o, s) in by]
        pairs += sparsity_steps(group)
    return pairs


def sparsity_steps(group: list[Evaluated]) -> list[tuple[Evaluated, Evaluated]]:
    """Each pruned method (defended or not: its configuration label) at each sparsity minus the same method at
    the next lower sparsity of the study: the paired test of "leakage falls as sparsity rises" (analysis/findings.py)."""
    by_method: dict[str, list[Evaluated]] = {}
    for e in group:
        if e.res["method"] != "dense" and float(e.res.get("sparsity") or 0) > 0:
            by_method.setdefault(e.res["method"], []).append(e)
    steps = []
    for runs in by_method.values():
        runs = sorted(runs, key=lambda e: float(e.res["sparsity"]))
        steps += [(hi, lo) for lo, hi in zip(runs, runs[1:])]
    return steps


def named_pairs(specs: list[str], evals: list[Evaluated]) -> list[tuple[Evaluated, Evaluated]]:
    """--pairs A:B ... by experiment name, in every dataset that has both."""
    pairs = []
    for spec in specs:
        a, sep, b = spec.partition(":")
        if not sep or not a or not b:
            raise UsageError(f"--pairs takes A:B (experiment names, e.g. dpf_0.9:dense), got {spec!r}")
        found = [(x, y) for x in evals for y in evals
                 if x.name == a and y.name == b and x.res["dataset"] == y.res["dataset"]]
        if not found:
            raise UsageError(f"--pairs {spec}: no dataset has both {a!r} and {b!r} (evaluated: "
                             f"{', '.join(sorted({e.name for e in evals}))})")
        pairs += found
    return pairs


def check_paired(a: Evaluated, b: Evaluated, ma: list[np.ndarray], mb: list[np.ndarray]) -> list[int]:
    """The targets both evaluated, after checking they are paired: the same pool labels and, per
    target, the same membership (one keep matrix; different --mia-seed/--pool-size/--num-shadows break it)."""
    common = [t for t in a.targets if t in b.targets]
    if not common:
        raise UsageError(f"{a.name} and {b.name} share no target (targets {a.targets} vs {b.targets})")
    for t in common:
        if not same_membership(ma[a.targets.index(t)], a.labels(), mb[b.targets.index(t)], b.labels()):
            raise UsageError(f"{a.name} and {b.name}: model {t} trained on different examples (different keep "
                             f"matrices or pools: --mia-seed, --pool-size or --num-shadows differ): not paired")
    return common


# -- the computations ------------------------------------------------------------------------------------

def floor_flags(metric: str, members: list[np.ndarray]) -> dict[str, bool]:
    """below_floor: a TPR at an FPR level under 1/#non-members of some target (not measured: the TPR
    with no false positive at all); coarse: measured, but on fewer than COARSE_FALSE_POSITIVES allowed
    false positives for some target (docs/attacks.md)."""
    if metric not in FPR_LEVELS:
        return {"below_floor": False, "coarse": False}
    n_out = np.array([max(1, int((~m).sum())) for m in members])
    below = bool(np.any(below_fpr_floor(FPR_LEVELS[metric], n_out)))
    fp = int(bs._max_false_positives(FPR_LEVELS[metric], n_out).min())
    return {"below_floor": below, "coarse": not below and fp < COARSE_FALSE_POSITIVES}


def _stats(s: dict) -> dict:
    return {k: s[k] for k in ("ci_low", "ci_high", "se", "df", "level", "num_targets", "covers")}


def interval_rows(ev: Evaluated, reps: dict, members: list[np.ndarray], st: Settings) -> list[dict]:
    rows = []
    for attack, per_metric in reps.items():
        for metric, r in per_metric.items():
            s = bs.interval(r, st.level)
            rows.append({**ev.ident, "attack": attack, "metric": metric, "value": s["difference"], **_stats(s),
                         "n_boot": st.n_boot, **floor_flags(metric, members)})
    return rows


def paired_rows(a: Evaluated, b: Evaluated, ra: dict, rb: dict, common: list[int], members: list[np.ndarray],
                st: Settings) -> list[dict]:
    """A - B for every attack both ran and every metric, on the common targets; then test accuracy.
    members: the common targets' membership (the same for A and B: checked)."""
    head = {"pair": f"{a.name} - {b.name}", "a": a.name, "b": b.name, "dataset": a.res["dataset"]}
    ia, ib = [a.targets.index(t) for t in common], [b.targets.index(t) for t in common]
    rows = []
    for attack in [k for k in ra if k in rb]:
        for metric in ra[attack]:
            s = bs.difference(ra[attack][metric].select(ia), rb[attack][metric].select(ib), st.level)
            rows.append({**head, "attack": attack, "metric": metric, **_cols(s, st), **floor_flags(metric, members)})
    acc_a, acc_b = [a.test_acc(t) for t in common], [b.test_acc(t) for t in common]
    if all(isinstance(v, (int, float)) for v in acc_a + acc_b):
        s = bs.accuracy_difference(acc_a, acc_b, st.level)
        rows.append({**head, "attack": "", "metric": "test_acc", **_cols(s, st), "below_floor": False, "coarse": False})
    return rows


def _cols(s: dict, st: Settings) -> dict:
    return {"a_value": s["a"], "b_value": s["b"], "difference": s["difference"], **_stats(s),
            "p_value": s["p_value"], "excludes_zero": s["excludes_zero"], "n_boot": st.n_boot}


def mark_significance(paired: pd.DataFrame, level: float) -> pd.DataFrame:
    """Adds family, p_adjusted and significant (p_adjusted < 1 - level) to the paired rows: every
    tested row is in the one family (FAMILY), Benjamini-Hochberg-adjusted. Below-floor and coarse cells
    and cells without a p-value are in no family (family ""), never significant (their raw interval and
    p-value stay in the CSV)."""
    d = paired.copy()
    untested = d["below_floor"].astype(bool) | d["coarse"].astype(bool) | d["p_value"].isna()
    d["family"] = np.where(untested, "", FAMILY)
    d["p_adjusted"] = np.nan
    tested = ~untested
    if tested.any():
        d.loc[tested, "p_adjusted"] = bs.benjamini_hochberg(d.loc[tested, "p_value"].to_numpy(np.float64))
    d["significant"] = d["p_adjusted"] < 1 - level  # NaN compares False
    return d


def per_class_rows(ev: Evaluated, scores: dict[str, list[np.ndarray]], members: list[np.ndarray],
                   st: Settings) -> list[dict]:
    """Each attack's AUC within each true class (mean over targets) with its counts; for the classes
    with at least st.min_class_count members and non-members in every target ("ranked"): a crossed
    interval each, their spread, and a permutation test of heterogeneity. Most / least exposed are
    filled in later (mark_exposed), once the tests are corrected across configurations."""
    labels = ev.labels()
    c = int(ev.res.get("num_classes") or labels.max() + 1)
    counts = np.min([bs.class_counts(m, labels, c) for m in members], axis=0)  # [2, C], smallest over targets
    ranked = [k for k in range(c) if counts[:, k].min() >= st.min_class_count]
    rows = []
    for attack, per_target in scores.items():
        per = np.array([bs.per_class_auc(s, m, labels, c) for s, m in zip(per_target, members)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class never defined for any target stays NaN
            mean = np.nanmean(per, axis=0)
        ci = {k: bs.interval(r, st.level) for k, r in
              bs.bootstrap_classes(per_target, members, labels, ranked, st.n_boot, st.seed).items()}
        spread = bs.auc_spread(mean[ranked] if len(ranked) > 1 else [])  # one class has no spread
        het = bs.class_heterogeneity(per_target, members, labels, ranked, seed=st.seed) if len(ranked) > 1 else np.nan
        row = {**ev.ident, "attack": attack, "num_targets": len(per_target), "classes_ranked": len(ranked),
               "heterogeneity_p": het, "heterogeneity_p_adjusted": np.nan, "most_exposed": "", "least_exposed": "",
               **{f"auc_{k}": spread[k] for k in ("min", "max", "std", "range")}}
        for k in range(c):
            row |= {f"auc_class_{k}": float(mean[k]), f"ci_low_class_{k}": ci[k]["ci_low"] if k in ci else np.nan,
                    f"ci_high_class_{k}": ci[k]["ci_high"] if k in ci else np.nan,
                    f"members_class_{k}": int(counts[0, k]), f"nonmembers_class_{k}": int(counts[1, k])}
        rows.append(row)
    return rows


def mark_exposed(per_class: pd.DataFrame, level: float) -> pd.DataFrame:
    """Holm-adjusts the heterogeneity p-values over the configurations (per attack: one family per attack,
    as the report shows one attack) and names the most / least exposed ranked class only where the
    classes differ beyond noise (adjusted p < 1 - level); elsewhere they stay empty."""
    d = per_class.copy()
    if d.empty:
        return d
    for _, idx in d.groupby("attack", sort=False).groups.items():
        d.loc[idx, "heterogeneity_p_adjusted"] = bs.holm(d.loc[idx, "heterogeneity_p"].to_numpy(np.float64))
    for i, r in d.iterrows():
        if r["heterogeneity_p_adjusted"] < 1 - level:
            ranked = {int(c.rsplit("_", 1)[1]): r[c] for c in d.columns if c.startswith("ci_low_class_") and pd.notna(r[c])}
            auc = {k: r[f"auc_class_{k}"] for k in ranked}
            d.loc[i, ["most_exposed", "least_exposed"]] = str(max(auc, key=auc.get)), str(min(auc, key=auc.get))
    return d


def compare_study(evals: list[Evaluated], pairs: list[tuple[Evaluated, Evaluated]], st: Settings) -> Study:
    """Bootstrap each configuration once (the same seed: paired resamples), then every interval,
    every pair's differences and the per-class AUCs. A configuration or pair that cannot be done is
    one line in `failures`; the rest goes on."""
    reps, members, intervals, per_class, failures = {}, {}, [], [], []
    for ev in evals:
        try:
            members[ev.key] = m = ev.members()
            scores = {a: ev.scores(a) for a in ev.attacks}
            reps[ev.key] = r = bs.bootstrap_attacks(scores, m, bs.METRICS, st.n_boot, st.seed)
        except (UsageError, ValueError) as e:
            failures.append(f"{ev.name} ({ev.res['dataset']}): {e}")
            continue
        intervals += interval_rows(ev, r, m, st)
        per_class += per_class_rows(ev, scores, m, st)
    paired = []
    for a, b in pairs:
        ka, kb = a.key, b.key
        if ka not in reps or kb not in reps:
            continue  # already reported
        try:
            common = check_paired(a, b, members[ka], members[kb])
        except UsageError as e:
            failures.append(str(e))
            continue
        paired += paired_rows(a, b, reps[ka], reps[kb], common, [members[ka][a.targets.index(t)] for t in common], st)
    for f in failures:
        print(f"error: comparisons: {f}", file=sys.stderr)
    intervals = pd.DataFrame(intervals, columns=INTERVAL_COLS)
    paired = mark_significance(pd.DataFrame(paired, columns=[c for c in PAIRED_COLS if c not in
                                                             ("family", "p_adjusted", "significant")]),
                               st.level)[PAIRED_COLS]
    return Study(intervals, paired, mark_exposed(pd.DataFrame(per_class), st.level), failures, st)


def write_study(study: Study, results_dir: Path) -> None:
    for df, name in ((study.intervals, paths.INTERVALS), (study.paired, paths.PAIRED), (study.per_class, paths.PER_CLASS)):
        save_text(df.to_csv(index=False), Path(results_dir) / name)


def run_comparisons(results_dir, pair_specs: list[str] | None = None, st: Settings | None = None,
                    only: list[str] | None = None) -> Study:
    """The comparisons of the unified evaluation in results_dir (of the experiment ids `only`, default
    every one there), written beside its tables."""
    unified = paths.mia_results_dir(results_dir, "unified")
    evals = load_evaluations(unified)
    by_id = {e.key: e for e in evals}
    if only is None:  # every evaluation there, in the study's order (the wide table's rows), others after
        table = unified / f"{paths.COMPREHENSIVE}.csv"
        rows = pd.read_csv(table) if table.exists() else pd.DataFrame(columns=["experiment", "dataset"])
        only = list(dict.fromkeys([experiment_id(r) for r in rows.to_dict("records")] + list(by_id)))
    evals = [by_id[i] for i in only if i in by_id]
    pairs = named_pairs(pair_specs, evals) if pair_specs else default_pairs(evals)
    study = compare_study(evals, pairs, st or Settings())
    write_study(study, Path(results_dir))
    return study
