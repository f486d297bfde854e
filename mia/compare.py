#!/usr/bin/env python
"""Which configuration leaks more, with confidence: paired comparisons of a study's configurations,
each configuration's own intervals and its per-class leakage, from the scores the evaluation saved
(docs/attacks.md, "Paired comparisons"); then the report (mia/report.py).

  python mia/compare.py --results-dir ./results [--pairs dpf_0.9:static_0.9 ...] [--n-boot 1000] [--seed 0]

Reads <results-dir>/mia/unified/<experiment>_<dataset>.json and the scores/ beside them (written by
mia/unified_mia_evaluation.py, which train.py runs, and which also runs this step). Writes into
--results-dir:
  attack_intervals.csv    experiment, method, sparsity, dataset, attack, metric, value, ci_low, ci_high,
                          level, n_boot, num_targets, below_floor
  paired_comparisons.csv  pair, a, b, dataset, attack, metric, a_value, b_value, difference, ci_low, ci_high,
                          excludes_zero, level, n_boot, num_targets (attack empty for test_acc)
  per_class_auc.csv       experiment, method, sparsity, dataset, attack, num_targets, auc_min, auc_max,
                          auc_std, auc_range, auc_class_0 ... auc_class_<C-1> (mean over targets)
  report.md, plots/
Default pairs, within each dataset: every pruned configuration against dense, and dpf against static at
each sparsity. Differences are A - B (the first named minus the second): positive = A leaks more.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from configs import paths
from mia import bootstrap as bs
from mia.evaluate import experiment_id
from mia.metrics import FPR_LEVELS
from utils.errors import UsageError, cli_main
from utils.io import load_json, load_npy, save_text

INTERVAL_COLS = ["experiment", "method", "sparsity", "dataset", "attack", "metric", "value", "ci_low", "ci_high",
                 "level", "n_boot", "num_targets", "below_floor"]
PAIRED_COLS = ["pair", "a", "b", "dataset", "attack", "metric", "a_value", "b_value", "difference", "ci_low",
               "ci_high", "excludes_zero", "level", "n_boot", "num_targets"]
ID_COLS = ["experiment", "method", "sparsity", "dataset"]


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
    """Within each dataset: each pruned configuration minus dense, then dpf minus static per sparsity."""
    pairs = []
    for ds in dict.fromkeys(e.res["dataset"] for e in evals):
        group = [e for e in evals if e.res["dataset"] == ds]
        dense = [e for e in group if e.res["method"] == "dense"]
        pairs += [(e, dense[0]) for e in group if dense and e.res["method"] != "dense"]
        by = {(e.res["method"], e.res["sparsity"]): e for e in group}
        pairs += [(by["dpf", s], by["static", s]) for (m, s) in by if m == "dpf" and ("static", s) in by]
    return pairs


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
    if not np.array_equal(a.labels(), b.labels()):
        raise UsageError(f"{a.name} and {b.name} have different pools: not paired")
    for t in common:
        if not np.array_equal(ma[a.targets.index(t)], mb[b.targets.index(t)]):
            raise UsageError(f"{a.name} and {b.name}: model {t} trained on different examples (different keep "
                             f"matrices: --mia-seed, --pool-size or --num-shadows differ): not paired")
    return common


# -- the computations ------------------------------------------------------------------------------------

@dataclass
class Settings:
    n_boot: int = 1000  # bootstrap resamples
    seed: int = 0  # seed of the resamples (the same for every configuration: that pairs them)
    level: float = 0.95  # confidence level of the percentile intervals


@dataclass
class Study:
    intervals: pd.DataFrame
    paired: pd.DataFrame
    per_class: pd.DataFrame
    failures: list[str] = field(default_factory=list)


def below_floor(metric: str, members: list[np.ndarray]) -> bool:
    """A TPR at an FPR level under 1/#non-members of some target: not measured (docs/attacks.md)."""
    return metric in FPR_LEVELS and any(FPR_LEVELS[metric] < 1 / max(1, int((~m).sum())) for m in members)


def interval_rows(ev: Evaluated, reps: dict, members: list[np.ndarray], st: Settings) -> list[dict]:
    rows = []
    for attack, per_metric in reps.items():
        for metric, r in per_metric.items():
            s = bs.interval(r, st.seed, st.level)
            rows.append({**ev.ident, "attack": attack, "metric": metric, "value": s["difference"],
                         "ci_low": s["ci_low"], "ci_high": s["ci_high"], "level": st.level, "n_boot": st.n_boot,
                         "num_targets": s["num_targets"], "below_floor": below_floor(metric, members)})
    return rows


def paired_rows(a: Evaluated, b: Evaluated, ra: dict, rb: dict, common: list[int], st: Settings) -> list[dict]:
    """A - B for every attack both ran and every metric, on the common targets; then test accuracy."""
    head = {"pair": f"{a.name} - {b.name}", "a": a.name, "b": b.name, "dataset": a.res["dataset"]}
    ia, ib = [a.targets.index(t) for t in common], [b.targets.index(t) for t in common]
    rows = []
    for attack in [k for k in ra if k in rb]:
        for metric in ra[attack]:
            s = bs.difference(ra[attack][metric].select(ia), rb[attack][metric].select(ib), st.seed, st.level)
            rows.append({**head, "attack": attack, "metric": metric, **_cols(s, st)})
    acc_a, acc_b = [a.test_acc(t) for t in common], [b.test_acc(t) for t in common]
    if all(isinstance(v, (int, float)) for v in acc_a + acc_b):
        s = bs.accuracy_difference(acc_a, acc_b, st.n_boot, st.seed, st.level)
        rows.append({**head, "attack": "", "metric": "test_acc", **_cols(s, st)})
    return rows


def _cols(s: dict, st: Settings) -> dict:
    return {"a_value": s["a"], "b_value": s["b"], "difference": s["difference"], "ci_low": s["ci_low"],
            "ci_high": s["ci_high"], "excludes_zero": s["excludes_zero"], "level": st.level, "n_boot": st.n_boot,
            "num_targets": s["num_targets"]}


def per_class_rows(ev: Evaluated, scores: dict[str, list[np.ndarray]], members: list[np.ndarray]) -> list[dict]:
    """Each attack's AUC within each true class, mean over targets, and its spread across classes."""
    labels = ev.labels()
    c = int(ev.res.get("num_classes") or labels.max() + 1)
    rows = []
    for attack, per_target in scores.items():
        per = np.array([bs.per_class_auc(s, m, labels, c) for s, m in zip(per_target, members)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class never defined for any target stays NaN
            mean = np.nanmean(per, axis=0)
        spread = bs.auc_spread(mean)
        rows.append({**ev.ident, "attack": attack, "num_targets": len(per_target),
                     **{f"auc_{k}": spread[k] for k in ("min", "max", "std", "range")},
                     **{f"auc_class_{k}": float(v) for k, v in enumerate(mean)}})
    return rows


def compare_study(evals: list[Evaluated], pairs: list[tuple[Evaluated, Evaluated]], st: Settings) -> Study:
    """Bootstrap each configuration once (the same seed: paired resamples), then every interval,
    every pair's differences and the per-class AUCs. A configuration or pair that cannot be done is
    one line in `failures`; the rest goes on."""
    reps, members, intervals, per_class, failures = {}, {}, [], [], []
    for ev in evals:
        try:
            members[ev.key] = m = ev.members()
            scores = {a: ev.scores(a) for a in ev.attacks}
            reps[ev.key] = r = bs.bootstrap_attacks(scores, m, bs.METRICS, st.n_boot, st.seed, target_ids=ev.targets)
        except (UsageError, ValueError) as e:
            failures.append(f"{ev.name} ({ev.res['dataset']}): {e}")
            continue
        intervals += interval_rows(ev, r, m, st)
        per_class += per_class_rows(ev, scores, m)
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
        paired += paired_rows(a, b, reps[ka], reps[kb], common, st)
    for f in failures:
        print(f"error: comparisons: {f}", file=sys.stderr)
    return Study(pd.DataFrame(intervals, columns=INTERVAL_COLS), pd.DataFrame(paired, columns=PAIRED_COLS),
                 pd.DataFrame(per_class), failures)


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


def add_settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-boot", type=int, default=Settings.n_boot, help="bootstrap resamples (default: 1000)")
    p.add_argument("--level", type=float, default=Settings.level, help="confidence level of the intervals (default: 0.95)")
    p.add_argument("--pairs", nargs="+", default=None, metavar="A:B",
                   help="pairs of experiment names, difference A - B (default: each pruned - dense, dpf - static per sparsity)")


def settings_from(args) -> Settings:
    if args.n_boot < 1 or not 0 < args.level < 1:
        raise UsageError(f"--n-boot must be >= 1 and --level in (0, 1), got {args.n_boot} and {args.level}")
    return Settings(args.n_boot, args.seed, args.level)


@cli_main
def main(argv=None) -> None:
    from mia import report

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default="./results", help="results root of an evaluation (holds mia/unified/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    add_settings_args(p)
    args = p.parse_args(argv)
    study = run_comparisons(args.results_dir, args.pairs, settings_from(args))
    out = report.build_from_disk(Path(args.results_dir), study, [shlex.join(["python", "mia/compare.py", *(argv or [])])])
    print(report.summary_line(study, out))
    if study.failures:
        raise UsageError(f"{len(study.failures)} comparison problem(s), listed above; the rest was written")


if __name__ == "__main__":
    main(sys.argv[1:])
