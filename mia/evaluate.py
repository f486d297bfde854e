"""Run attacks on experiments: leave-one-out targets, shadow-calibrated thresholds, one metrics
function; and the writers (per-experiment JSON, wide CSV row, long CSV rows). Shared by every
mia/ script (mia_advanced, mia_wemem, mia_classic) and reusable by a unified evaluation.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from artifacts import paths
from artifacts.rundir import Signals, arch_label, load_experiment, same_study
from artifacts.schema import LONG_KEYS, METRICS, OWN, ROW_KEYS, experiment_id, flagged
from mia.attacks import (ATTACKS, AttackInput, AttackSettings, check_attacks, pseudo_target_settings, run_attack,
                         suite_attacks)
from mia.metrics import best_threshold, compute_metrics
from mia.shadows import target_settings
from utils.errors import UsageError
from utils.io import load_json, save_json, save_npy, save_text


# -- one attack against one target ------------------------------------------------------------------

def shadow_rows(sig: Signals, target: int, src: Signals | None = None) -> list[int]:
    """Leave-one-out: the rows of the shadow source (sig itself, or --shadows-from's configuration) whose
    model index is not the target's. With another configuration's shadows, its model of the target's index
    is left out too: it trained on exactly the target's members, which the attacker must not know."""
    src = sig if src is None else src
    return [r for r in range(len(src.indices)) if src.indices[r] != sig.indices[target]]


def attack_input(sig: Signals, target: int, shadows: list[int], src: Signals | None = None) -> AttackInput:
    """Row `target` of sig and rows `shadows` of the shadow source (default: sig). The target's keep row
    is deliberately absent."""
    src = sig if src is None else src
    assert sig.indices[target] not in [src.indices[r] for r in shadows], "a target is never among its own shadows"
    sens, ssens = sig.sensitivity, src.sensitivity
    both = sens is not None and ssens is not None
    return AttackInput(sig.logits[target], src.logits[shadows], src.keep[shadows], sig.labels,
                       sens[target] if both else None, ssens[shadows] if both else None)


def calibrate_threshold(name: str, sig: Signals, target: int, st: AttackSettings,
                        src: Signals | None = None) -> tuple[float | None, str]:
    """For attacks without their own decision rule: run the attack with the target's first shadow as
    a pseudo-target (the other shadows as its shadows; the real target excluded) and take the
    threshold that best separates that shadow's members. Never reads the target's keep or logits.
    The rerun keeps the target's shadow-count-dependent choices (pseudo_target_settings)."""
    src = sig if src is None else src
    pseudo, *rest = shadow_rows(sig, target, src)
    try:
        out = run_attack(name, attack_input(src, pseudo, rest), pseudo_target_settings(st))
    except UsageError as e:
        return None, f"not calibrated ({e})"
    return best_threshold(out.scores, src.keep[pseudo]), f"pseudo-target: model {src.indices[pseudo]}"


def attack_target(name: str, sig: Signals, target: int, st: AttackSettings, src: Signals | None = None) -> dict:
    """Metrics of one attack against one target (a row of sig), with the calibrated threshold; shadows
    from `src` (another configuration of the same study: --shadows-from), by default from sig."""
    t0 = time.perf_counter()
    st = target_settings(st, sig.indices[target])  # each target's attack draws its own randomness
    out = run_attack(name, attack_input(sig, target, shadow_rows(sig, target, src), src), st)
    if out.threshold is None:
        threshold, how = calibrate_threshold(name, sig, target, st, src)
    else:
        threshold, how = out.threshold, out.calibration
    try:
        m = compute_metrics(out.scores, sig.keep[target], threshold, delta=sig.config.get("dp_delta"))  # a DP run's delta
    except UsageError as e:  # non-finite scores: named with the target (evaluate_experiment adds the attack)
        raise UsageError(f"against model {sig.indices[target]}: {e}") from None
    m.update(time_s=time.perf_counter() - t0, calibration=how, info=out.info, scores=out.scores)
    return m


# -- one experiment -----------------------------------------------------------------------------------

def target_indices(spec: str | int) -> list[int] | None:
    """--targets: 'all' (None: every finished model), one model index, or a comma-separated list of them."""
    text = str(spec).replace(" ", "")
    if text == "all":
        return None
    parts = text.split(",")
    if not all(p.isdigit() for p in parts):
        raise UsageError(f"--targets must be 'all', a model index or a comma-separated list of them (e.g. 0,1,2), got {spec!r}")
    return list(dict.fromkeys(int(p) for p in parts))


def target_rows(spec: str | int, sig: Signals) -> list[int]:
    wanted = target_indices(spec)
    if wanted is None:
        return list(range(len(sig.indices)))
    missing = [k for k in wanted if k not in sig.indices]
    if missing:
        raise UsageError(f"--targets {spec}: model(s) {missing} not finished models of {sig.exp_dir} (finished: {sig.indices})")
    return [sig.row(k) for k in wanted]


def _header(sig: Signals, rows: list[int], st: AttackSettings, src: Signals | None = None) -> dict:
    cfg, shadows = sig.config, OWN if src is None else src.config.get("name")
    name = cfg.get("name") or sig.exp_dir.name
    # a defended configuration's method is 'dpf+ppb' (paths.method_label): its own line in every table and plot;
    # attacked with another configuration's shadows (--shadows-from dense), its experiment is 'finetune_0.7@dense'
    res = {"experiment": name if src is None else f"{name}@{shadows}", "shadows": shadows,
           "method": paths.method_label(cfg.get("method"), cfg.get("defense", "none")), "defense": cfg.get("defense", "none"),
           "sparsity": cfg.get("sparsity"), "dataset": cfg.get("dataset"), "arch": arch_label(cfg),
           "exp_dir": str(sig.exp_dir), "shadows_dir": str((src or sig).exp_dir), "targets": [sig.indices[r] for r in rows],
           "num_models": len(sig.indices), "num_shadows": len(shadow_rows(sig, rows[0], src)) if rows else 0,
           "pool_size": len(sig.labels),
           "num_queries": sig.logits.shape[2], "num_classes": sig.logits.shape[3], "settings": st.to_dict()}
    res["model_test_acc"] = {str(sig.indices[r]): sig.summaries[sig.indices[r]].get("test_acc") for r in rows}
    for key in ("train_acc", "test_acc", "measured_sparsity", "dp_epsilon"):  # dp_epsilon: a DP model's accountant
        vals = [sig.summaries[sig.indices[r]].get(key) for r in rows]
        vals = [v for v in vals if isinstance(v, (int, float))]
        res[key] = float(np.mean(vals)) if vals else None
    return res


def _numeric(per: dict[int, dict]) -> list[str]:
    """Numeric metric names over all targets, in first-seen order (accuracy may miss for some)."""
    keys = [k for m in per.values() for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return list(dict.fromkeys(keys))


def summarize(name: str, per: dict[int, dict], st: AttackSettings) -> dict:
    """Mean and std over targets, per-target metrics, the first target's ROC, settings, timing. The std
    is the sample std (ddof = 1: the targets are a sample of the models one could train); None (JSON
    null, an empty CSV cell) for a metric with one value, where it is undefined (NaN is not JSON)."""
    first = next(iter(per.values()))
    vals = {k: [m[k] for m in per.values() if k in m] for k in _numeric(per)}
    spec = ATTACKS[name]
    return {
        "description": spec.description,
        "mean": {k: float(np.mean(v)) for k, v in vals.items()},
        "std": {k: float(np.std(v, ddof=1)) if len(v) > 1 else None for k, v in vals.items()},
        "per_target": {str(t): {k: v for k, v in p.items() if k not in ("roc", "info", "scores")} for t, p in per.items()},
        "roc": {"target": next(iter(per)), **first["roc"]},
        "settings": {k: v for k, v in st.to_dict().items() if k in ("seed", "device") or k.startswith(spec.settings)},
        "info": first["info"], "calibration": first["calibration"],
        "time_s": float(sum(p["time_s"] for p in per.values())),
        "fpr_floor_note": f"FPR levels below 1/#non-members = {first['min_fpr']:.2g} cannot be measured",
    }


def save_membership(scores: Path, sig: Signals, rows: list[int]) -> None:
    """The pool labels and each target's membership, once per experiment: what the saved scores are
    judged by (mia/compare.py rebuilds comparisons and the report from results/ alone)."""
    save_npy(np.asarray(sig.labels, np.int64), scores / paths.LABELS)
    for r in rows:
        save_npy(np.asarray(sig.keep[r], bool), paths.members_file(scores, sig.indices[r]))


def save_scores(scores: Path, name: str, per: dict[int, dict]) -> None:
    """Each target's per-example scores of one attack; they leave `per` (they are not JSON). float64 as
    computed: float32 would tie confident examples (p_y = 1 - 1e-9 rounds to 1) and change the AUCs a
    comparison recomputes from them; the files are small beside the logits they come from."""
    for t, p in per.items():
        save_npy(np.asarray(p.pop("scores"), np.float64), paths.score_file(scores, t, name))


def check_same_study(src_dir: Path, exp_dir: Path, spec) -> None:
    """--shadows-from's one compatibility rule: the other configuration is of the same study (the same
    keep matrix and pool labels: model i of both trained on the same examples), else one line."""
    if not same_study(src_dir, exp_dir):
        raise UsageError(f"--shadows-from {spec}: {src_dir} and {exp_dir} have different keep matrices or pools (not "
                         f"the same study: another --mia-seed, pool or number of models); their models cannot be paired")


def shadow_source(sig: Signals, shadows_dir) -> Signals | None:
    """--shadows-from: the other configuration's signals (check_same_study); None for the experiment itself."""
    if shadows_dir is None or Path(shadows_dir).resolve() == Path(sig.exp_dir).resolve():
        return None
    check_same_study(Path(shadows_dir), Path(sig.exp_dir), shadows_dir)
    return load_experiment(shadows_dir)


def evaluate_experiment(exp_dir, attacks: list[str], targets: str | int = "0", settings: AttackSettings | None = None,
                        suite_dir: str | Path | None = None, shadows_from: str | Path | None = None) -> dict:
    """Every requested attack against every chosen target (leave-one-out). An attack that cannot run
    here (too few shadows, no sensitivity) is recorded under 'errors'; the others still run. With
    suite_dir, every attack's scores are saved under suite_dir/scores/<experiment id>/ (paths.scores_dir).
    shadows_from: another experiment directory of the same study whose models are the shadows (the
    attacker who does not mirror the target's pipeline: e.g. dense shadows for a pruned target)."""
    st = settings or AttackSettings()
    check_attacks(attacks)
    sig = load_experiment(exp_dir)
    src = shadow_source(sig, shadows_from)
    rows = target_rows(targets, sig)
    res = {**_header(sig, rows, st, src), "attacks": {}, "errors": {}}
    scores = None if suite_dir is None else paths.scores_dir(suite_dir, experiment_id(res))
    if scores is not None:
        save_membership(scores, sig, rows)
    for name in attacks:
        try:
            per = {sig.indices[r]: attack_target(name, sig, r, st, src) for r in rows}
        except UsageError as e:
            res["errors"][name] = str(e)
            continue
        if scores is not None:
            save_scores(scores, name, per)
        res["attacks"][name] = summarize(name, per, st)
    return res


# -- tables (reused by the unified evaluation) ---------------------------------------------------------

def below_floor(a: dict, metric: str) -> bool | None:
    """True when, for any target, `metric` is a TPR at an FPR level below 1/#non-members: that figure is
    the TPR with no false positive at all, not a measurement at the level (and it enters the mean).
    None for metrics without an FPR level (auc, accuracy, advantage)."""
    flags = [p[f"{metric}_below_floor"] for p in a["per_target"].values() if f"{metric}_below_floor" in p]
    return any(flags) if flags else None


def wide_row(res: dict) -> dict:
    """One CSV row: experiment, method, sparsity, dataset, arch, train_acc, test_acc (+ test_acc_std over
    the targets with several), then <attack>_<metric> (and <attack>_<metric>_std with several targets; <attack>_<metric>_below_floor
    for the TPR levels), then bookkeeping."""
    row = {k: res.get(k) for k in ROW_KEYS}
    multi = len(res["targets"]) > 1
    accs = [v for v in (res.get("model_test_acc") or {}).values() if isinstance(v, (int, float))]
    if multi and len(accs) > 1:
        row["test_acc_std"] = float(np.std(accs, ddof=1))
    for name, a in res["attacks"].items():
        for m in METRICS:
            if m in a["mean"]:
                row[f"{name}_{m}"] = a["mean"][m]
                if multi:
                    row[f"{name}_{m}_std"] = a["std"][m]
                if (flag := below_floor(a, m)) is not None:
                    row[f"{name}_{m}_below_floor"] = flag
    row.update(measured_sparsity=res.get("measured_sparsity"), defense=res.get("defense", "none"),
               dp_epsilon=res.get("dp_epsilon"), num_shadows=res.get("num_shadows"),
               num_targets=len(res["targets"]))
    return row


def long_rows(res: dict) -> list[dict]:
    """(experiment, method, sparsity, dataset, attack, target, metric, value, below_floor), one row per
    number; below_floor is True for a TPR at an FPR level below that target's 1/#non-members."""
    ident = {k: res.get(k) for k in LONG_KEYS[:4]}
    return [{**ident, "attack": name, "target": int(t), "metric": m, "value": p[m],
             "below_floor": bool(p.get(f"{m}_below_floor", False))}
            for name, a in res["attacks"].items() for t, p in a["per_target"].items() for m in METRICS if m in p]


def write_results(results: list[dict], out_dir: str | Path, csv_stem: str) -> pd.DataFrame:
    """Per-experiment JSON, <csv_stem>.csv (wide) and <csv_stem>_long.csv; atomic writes."""
    out_dir = Path(out_dir)
    for r in results:
        save_json(r, out_dir / f"{experiment_id(r)}.json")
    df = pd.DataFrame([wide_row(r) for r in results], columns=None if results else list(ROW_KEYS))
    save_text(df.to_csv(index=False), out_dir / f"{csv_stem}.csv")
    long = pd.DataFrame([x for r in results for x in long_rows(r)], columns=list(LONG_KEYS))
    save_text(long.to_csv(index=False), out_dir / f"{csv_stem}_long.csv")
    return df


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not pd.isna(v) else "nan"


def print_table(df: pd.DataFrame, attacks: list[str]) -> None:
    """AUC and TPR at 0.1% FPR per experiment and attack; '*' marks a TPR at an FPR below the floor."""
    if df.empty:
        return
    for metric in ("auc", "tpr_at_0.1pct_fpr"):
        cols = {f"{a}_{metric}": a for a in attacks if f"{a}_{metric}" in df}
        if cols:
            names = df["experiment"].astype(str) + "/" + df["dataset"].astype(str)
            t = pd.DataFrame({"test_acc": df["test_acc"].map(_fmt)})
            for col, a in cols.items():
                t[a] = df[col].map(_fmt) + flagged(df, col).map({True: "*", False: " "})
            note = "  (* FPR level below 1/#non-members: not measured)" if any(flagged(df, c).any() for c in cols) else ""
            print(f"\n{metric}:{note}\n{t.set_axis(names).to_string()}")


# -- many experiments ---------------------------------------------------------------------------------

def find_experiment_dirs(runs_dir) -> list[Path]:
    runs = Path(runs_dir)
    if not runs.is_dir():
        raise UsageError(f"runs directory {runs} does not exist")
    exps = paths.find_experiments(runs)
    if not exps:
        raise UsageError(f"no experiment in {runs} (no {paths.KEEP_MATRIX} found); train with run_experiment.py or train.py")
    return exps


def resolve_shadows_from(spec: str, names, where: str = "") -> Path | str:
    """What --shadows-from names: an experiment directory (a Path) or one of `names`, the study's
    configurations (train.py: those it plans; the mia/ scripts: those of the runs directory, per
    dataset); anything else is refused in one line."""
    if (Path(spec) / paths.KEEP_MATRIX).exists():
        return Path(spec)
    if spec in names:
        return spec
    raise UsageError(f"--shadows-from {spec}: no such configuration{where}: not a configuration of this study "
                     f"({', '.join(sorted(map(str, names)))}) nor an experiment directory")


def shadows_dirs(spec: str | None, exp_dirs: list[Path]) -> dict[Path, Path | None]:
    """--shadows-from, resolved for every experiment before anything runs (a bad one is one line and
    nothing is written): an experiment directory, or the name of a configuration, looked up among
    exp_dirs in each experiment's dataset. The experiments of that configuration keep their own shadows."""
    out = {exp: None for exp in exp_dirs}
    if spec is None:
        return out
    cfgs = {exp: load_json(Path(exp) / paths.CONFIG) for exp in exp_dirs}
    for exp in exp_dirs:
        ds = cfgs[exp].get("dataset")
        same_data = [e for e in exp_dirs if cfgs[e].get("dataset") == ds]
        src = resolve_shadows_from(spec, [cfgs[e].get("name") for e in same_data], f" for dataset {ds}")
        if isinstance(src, str):
            src = next(e for e in same_data if cfgs[e].get("name") == src)
        if Path(src).resolve() != Path(exp).resolve():
            check_same_study(src, exp, spec)
            out[exp] = Path(src)
    return out


def evaluate_all(exp_dirs: list[Path], attacks: list[str], targets: str, st: AttackSettings,
                 suite_dir: str | Path | None = None, shadows_from: str | None = None) -> tuple[list[dict], list[str]]:
    """Evaluate each experiment (scores saved under suite_dir when given); each problem is printed as
    one line and the rest goes on. When none could be evaluated: a UsageError, before anything is written.
    shadows_from: --shadows-from (shadows_dirs)."""
    results, failures = [], []
    shadows = shadows_dirs(shadows_from, exp_dirs)
    for exp in exp_dirs:
        try:
            res = evaluate_experiment(exp, attacks, targets, settings=st, suite_dir=suite_dir, shadows_from=shadows[exp])
        except UsageError as e:
            failures.append(f"{exp}: {e}")
            print(f"error: {exp}: {e}", file=sys.stderr)
            continue
        for name, msg in res["errors"].items():
            failures.append(f"{exp}: {name}: {msg}")
            print(f"error: {exp}: {name}: {msg}", file=sys.stderr)
        results.append(res)
    if not results:  # writing now would replace earlier tables with empty ones
        raise UsageError(f"no experiment could be evaluated ({len(failures)} problem(s) listed above); "
                         f"nothing written, earlier results kept")
    return results, failures
