"""Run attacks on experiments: leave-one-out targets, shadow-calibrated thresholds, one metrics
function, and the writers (per-experiment JSON, wide CSV, long CSV). Shared by every mia/ script."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from configs import paths
from mia.artifacts import Signals, load_experiment
from mia.attacks import ATTACKS, AttackInput, AttackSettings, check_attacks, suite_attacks
from mia.metrics import best_threshold, compute_metrics
from utils.errors import UsageError
from utils.io import save_json, save_text

METRICS = ("auc", "accuracy", "advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "tpr_at_0.01pct_fpr")


def attack_input(sig: Signals, target: int, shadows: list[int]) -> AttackInput:
    """Rows of `sig` for one target and its shadows. The target's keep row is deliberately absent."""
    if target in shadows:
        raise AssertionError("a target is never its own shadow")
    s = np.asarray(shadows)
    return AttackInput(sig.logits[target], sig.logits[s], sig.keep[s], sig.labels,
                       None if sig.sensitivity is None else sig.sensitivity[target],
                       None if sig.sensitivity is None else sig.sensitivity[s])


def _check_runnable(name: str, sig: Signals, n_shadows: int) -> None:
    spec = ATTACKS[name]
    if n_shadows < spec.min_shadows:
        what = "LiRA" if name == "lira" else name
        raise UsageError(f"{what} needs at least {spec.min_shadows} shadow models (found {n_shadows}); "
                         f"train with --num-shadows N")
    if spec.needs_sensitivity and sig.sensitivity is None:
        raise UsageError(f"{name} needs sensitivity.npy for every model")


def calibrate_threshold(name: str, sig: Signals, shadows: list[int], st: AttackSettings) -> float | None:
    """Run the attack with shadows[0] as a pseudo-target (the other shadows as its shadows; the real
    target excluded) and take the threshold that best separates that shadow's members. None when
    too few shadows remain."""
    pseudo, rest = shadows[0], shadows[1:]
    try:
        _check_runnable(name, sig, len(rest))
        out = ATTACKS[name].fn(attack_input(sig, pseudo, rest), st)
    except UsageError:
        return None
    return best_threshold(out.scores, sig.keep[pseudo])


def run_attack(name: str, sig: Signals, target: int, st: AttackSettings) -> dict:
    """Metrics of one attack against one target (row index into sig)."""
    shadows = [r for r in range(len(sig.indices)) if r != target]
    _check_runnable(name, sig, len(shadows))
    t0 = time.time()
    out = ATTACKS[name].fn(attack_input(sig, target, shadows), st)
    thr = out.threshold if out.threshold is not None else calibrate_threshold(name, sig, shadows, st)
    m = compute_metrics(out.scores, sig.keep[target], thr)
    m["time_s"] = time.time() - t0
    m["info"] = out.info
    return m


def _targets(spec: str, sig: Signals) -> list[int]:
    if spec == "all":
        return list(range(len(sig.indices)))
    try:
        k = int(spec)
    except ValueError:
        raise UsageError(f"--targets must be a model index or 'all', got {spec!r}") from None
    if k not in sig.indices:
        raise UsageError(f"--targets {k}: model {k} is not a finished model of {sig.exp_dir} (have {sig.indices})")
    return [sig.row(k)]


def evaluate_experiment(exp_dir, attacks: list[str], targets: str = "0", st: AttackSettings | None = None) -> dict:
    """Every requested attack against every chosen target; mean and std over targets.
    Attacks that cannot run here are recorded under 'errors' (the others still run)."""
    st = st or AttackSettings()
    check_attacks(attacks)
    sig = load_experiment(exp_dir)
    rows = _targets(targets, sig)
    cfg = sig.config
    res = {"experiment": cfg.get("name"), "exp_dir": str(exp_dir), "method": cfg.get("method"),
           "sparsity": cfg.get("sparsity"), "dataset": cfg.get("dataset"), "arch": f"{cfg.get('arch')}-{cfg.get('layers')}",
           "targets": [sig.indices[r] for r in rows], "num_shadows": len(sig.indices) - 1,
           "pool_size": len(sig.labels), "settings": st.to_dict(), "attacks": {}, "errors": {}}
    for key in ("train_acc", "test_acc", "sparsity"):
        vals = [sig.summaries[sig.indices[r]].get(key) for r in rows]
        vals = [v for v in vals if v is not None]
        res["measured_sparsity" if key == "sparsity" else key] = float(np.mean(vals)) if vals else None
    for name in attacks:
        try:
            per = {sig.indices[r]: run_attack(name, sig, r, st) for r in rows}
        except UsageError as e:
            res["errors"][name] = str(e)
            continue
        first = per[res["targets"][0]]
        keys = [k for k in first if isinstance(first[k], (int, float)) and not isinstance(first[k], bool)]
        res["attacks"][name] = {
            "mean": {k: float(np.mean([p[k] for p in per.values() if k in p])) for k in keys},
            "std": {k: float(np.std([p[k] for p in per.values() if k in p])) for k in keys},
            "per_target": {str(t): {k: v for k, v in p.items() if k not in ("roc", "info")} for t, p in per.items()},
            "roc": {**first["roc"], "auc": first["auc"]}, "info": first["info"],
            "fpr_floor_note": f"FPR levels below {first['min_fpr']:.2g} (1/#non-members) cannot be measured",
        }
    return res


# -- tables ---------------------------------------------------------------------------------------------

def experiment_id(res: dict) -> str:
    return f"{res['experiment']}_{res['dataset']}"


def wide_row(res: dict) -> dict:
    """One CSV row: experiment, method, sparsity, dataset, arch, train_acc, test_acc, <attack>_<metric>."""
    row = {k: res.get(k) for k in ("experiment", "method", "sparsity", "dataset", "arch", "train_acc", "test_acc",
                                   "measured_sparsity", "num_shadows")}
    multi = len(res["targets"]) > 1
    for name, a in res["attacks"].items():
        for m in METRICS:
            if m in a["mean"]:
                row[f"{name}_{m}"] = a["mean"][m]
                if multi:
                    row[f"{name}_{m}_std"] = a["std"][m]
    return row


def long_rows(res: dict) -> list[dict]:
    """(experiment, attack, target, metric, value) rows for analysis."""
    return [{"experiment": res["experiment"], "dataset": res["dataset"], "method": res["method"],
             "sparsity": res["sparsity"], "attack": name, "target": int(t), "metric": m, "value": v}
            for name, a in res["attacks"].items() for t, p in a["per_target"].items()
            for m, v in p.items() if m in METRICS]


def write_results(results: list[dict], out_dir: Path, csv_name: str) -> pd.DataFrame:
    out_dir = Path(out_dir)
    for r in results:
        save_json(r, out_dir / f"{experiment_id(r)}.json")
    df = pd.DataFrame([wide_row(r) for r in results])
    save_text(df.to_csv(index=False), out_dir / csv_name)
    return df


# -- the scripts' shared command line -------------------------------------------------------------------

def add_eval_args(p: argparse.ArgumentParser, default_attacks: list[str]) -> None:
    p.add_argument("--runs-dir", default="./runs", help="runs directory to evaluate (every experiment in it)")
    p.add_argument("--results-dir", default="./results", help="results root")
    p.add_argument("--attacks", nargs="+", default=default_attacks, help=f"attacks (default: {' '.join(default_attacks)})")
    p.add_argument("--targets", default="0", help="target model index, or 'all' (leave-one-out: mean and std over targets)")
    p.add_argument("--device", default="auto", help="device for attack models: auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack models")


def settings_from(args) -> AttackSettings:
    from training.trainer import resolve_device

    return AttackSettings(seed=args.seed, device=str(resolve_device(args.device)))


def evaluate_all(exp_dirs: list[Path], attacks: list[str], targets: str, st: AttackSettings) -> tuple[list[dict], list[str]]:
    """Evaluate each experiment; a problem in one is printed as one line and the others go on."""
    results, failures = [], []
    for exp in exp_dirs:
        try:
            res = evaluate_experiment(exp, attacks, targets, st)
        except UsageError as e:
            failures.append(f"{exp}: {e}")
            print(f"error: {exp}: {e}")
            continue
        for name, msg in res["errors"].items():
            failures.append(f"{exp}: {msg}")
            print(f"error: {exp}: {name}: {msg}")
        results.append(res)
    return results, failures


def find_experiment_dirs(runs_dir) -> list[Path]:
    runs = Path(runs_dir)
    if not runs.is_dir():
        raise UsageError(f"runs directory {runs} does not exist")
    exps = paths.find_experiments(runs)
    if not exps:
        raise UsageError(f"no experiment in {runs} (no {paths.KEEP_MATRIX} found); train with run_experiment.py or train.py")
    return exps


def print_table(df: pd.DataFrame, metric: str = "auc") -> None:
    cols = [c for c in df.columns if c.endswith(f"_{metric}")]
    if cols:
        print(df.set_index("experiment")[["test_acc"] + cols].to_string(float_format=lambda v: f"{v:.3f}"))


def suite_main(suite: str, argv=None, description: str = "") -> None:
    """mia_advanced.py / mia_wemem.py: one suite over every experiment of a runs directory."""
    p = argparse.ArgumentParser(description=description)
    add_eval_args(p, suite_attacks(suite))
    args = p.parse_args(argv)
    check_attacks(args.attacks)
    exps = find_experiment_dirs(args.runs_dir)
    results, failures = evaluate_all(exps, args.attacks, args.targets, settings_from(args))
    out = paths.mia_results_dir(args.results_dir, suite)
    df = write_results(results, out, f"{suite}_mia_results.csv")
    print_table(df)
    print(f"results: {out}")
    if failures:
        raise UsageError(f"{len(failures)} problem(s), listed above; the other results were written to {out}")
