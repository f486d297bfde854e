#!/usr/bin/env python
"""Which examples pruning exposes: the per-example stage over a finished study (docs/attacks.md, "Which
examples pruning exposes"). Reads only the run directories (artifacts/rundir.py) and the scores the evaluation
saved (results/mia/unified/scores/, optional); writes under --results-dir/per_example/ (artifacts/paths.py):

  python -m analysis.stage --runs-dir ./runs --results-dir ./results [--pairs dpf_0.9:dense ...] [--targets 0]

  <experiment>_<dataset>/per_example.csv  one row per pool example: index, label, mem, mem_se, mem_n_in, mem_n_out,
                           p_in, p_out, exposure, phi_gap, phi_in, phi_out, phi_sd, modal_prediction, then each saved
                           attack's <attack>_score_mean and <attack>_rank_mean (its score's percentile rank in the
                           pool, mean over the targets)
  pairs/<A>__<B>_<dataset>.csv  per example: index, label, dense_mem, exposure_a, exposure_b, change, gap_change, t,
                           df, p_value, p_adjusted, rose, fell, pie (A's PIE against dense; empty without dense)
  exposure_changes.csv     per pair and class ('all' first): examples, share rose / fell (BH at --fdr), mean and
                           median change, Spearman rho of dense memorisation with the change and its interval, and
                           the same rho cross-fitted (memorisation and change from disjoint halves of the dense
                           models: the plain rho shares their noise when dense is in the pair)
  pies.csv                 per configuration against dense: PIE count and share (pool), and PIE - rest of the
                           exposure and of dense memorisation, with intervals
  pair_attack.csv          per pair: each pair attack against its one-model attack on A alone and on B alone,
                           AUC and TPR at low FPR, paired intervals (analysis/bootstrap.py) over --targets
  figures/*.csv, ../plots/per_example_*.png   the tables behind the figures, and the figures
  stage.json               the settings, the stage's time (wall and CPU) and the attacks' time on the same study
  section.md               the report's section "Which examples pruning exposes" (also put into report.md)

Memorisation and exposure are computed over each configuration's models except --leave-out (default 0, the
attacks' default target), so they never use the model an attack is scored on.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import figures, per_example as pe, section
from analysis.pair_attack import PAIR_ATTACKS, PairInput
from artifacts import paths
from analysis import bootstrap as bs
from artifacts.rundir import Signals, load_experiment, same_study
from mia.attacks import run_attack
from analysis.compare import default_pairs, floor_flags, load_evaluations, named_pairs
from mia.evaluate import attack_input, find_experiment_dirs, shadow_rows, target_indices
from mia.shadows import AttackSettings, target_settings
from utils.errors import UsageError, cli_main
from utils.io import save_json, save_text


@dataclass
class Config:
    """One configuration of the study with its signals and per-model arrays (what every step reads)."""
    sig: Signals
    preds: np.ndarray   # int64 [M, N]
    phis: np.ndarray    # float64 [M, N]

    @property
    def res(self) -> dict:  # what analysis.compare's pairing rules read
        c = self.sig.config
        return {"dataset": c.get("dataset"), "method": paths.method_label(c.get("method"), c.get("defense", "none")),
                "sparsity": c.get("sparsity"), "defense": c.get("defense", "none"), "experiment": self.name}

    @property
    def name(self) -> str:
        return str(self.sig.config.get("name") or self.sig.exp_dir.name)

    @property
    def key(self) -> str:
        return f"{self.name}_{self.res['dataset']}"

    @property
    def num_classes(self) -> int:
        return int(self.sig.logits.shape[3])

    def rows(self, indices: list[int]) -> list[int]:
        return [self.sig.row(i) for i in indices]


def load_config(exp: Path) -> Config:
    sig = load_experiment(exp)
    return Config(sig, pe.predictions(sig.logits, sig.labels), pe.logit_confidence(sig.logits, sig.labels))


def used_models(cfgs: list[Config], leave_out: int | None) -> list[int]:
    """Model indices every given configuration finished, without the left-out one."""
    common = set(cfgs[0].sig.indices).intersection(*(c.sig.indices for c in cfgs[1:]))
    return sorted(i for i in common if i != leave_out)


def check_same_study(a: Config, b: Config) -> None:
    """Model i of both must have trained on the same subset: one keep matrix and one pool."""
    if not same_study(a.sig.exp_dir, b.sig.exp_dir):
        raise UsageError(f"{a.name} and {b.name} ({a.res['dataset']}) have different keep matrices or pools (not the "
                         f"same study: --mia-seed, --pool-size or --num-shadows differ): their models cannot be paired")


# -- per configuration ---------------------------------------------------------------------------------------

def score_stats(scores_dir: Path) -> dict[str, np.ndarray]:
    """Each saved attack's per-example score statistics over the evaluated targets: mean score and mean
    percentile rank in the pool (comparable across attacks). Empty when the evaluation has not run."""
    unified = scores_dir.parent.parent
    if not scores_dir.is_dir():
        return {}
    ev = next((e for e in load_evaluations(unified) if e.key == scores_dir.name), None)
    if ev is None:
        return {}
    out = {}
    for attack in ev.attacks:
        s = np.array(ev.scores(attack), np.float64)  # [T, N]
        out[f"{attack}_score_mean"] = s.mean(0)
        out[f"{attack}_rank_mean"] = (np.argsort(np.argsort(s, axis=1), axis=1) / (s.shape[1] - 1)).mean(0)
    return out


def per_config_table(c: Config, models: list[int], results_dir: Path) -> pd.DataFrame:
    rows = c.rows(models)
    keep, labels = c.sig.keep[rows], c.sig.labels
    mem = pe.memorisation(c.preds[rows] == labels, keep)
    ex = pe.exposure(c.phis[rows], keep)
    df = pd.DataFrame({"index": np.arange(len(labels)), "label": labels, "mem": mem.mem, "mem_se": mem.se,
                       "mem_n_in": mem.n_in, "mem_n_out": mem.n_out, "p_in": mem.p_in, "p_out": mem.p_out,
                       "exposure": ex.exposure, "phi_gap": ex.gap, "phi_in": ex.mean_in, "phi_out": ex.mean_out,
                       "phi_sd": ex.sd, "modal_prediction": pe.modal_prediction(c.preds[rows], c.num_classes)})
    unified = paths.mia_results_dir(results_dir, "unified")
    for k, v in score_stats(paths.scores_dir(unified, c.key)).items():
        df[k] = v
    return df


# -- per pair ------------------------------------------------------------------------------------------------

def pair_table(a: Config, b: Config, models: list[int], dense: Config | None, dense_mem: np.ndarray,
               fdr: float) -> pd.DataFrame:
    rows_a, rows_b = a.rows(models), b.rows(models)
    keep = a.sig.keep[rows_a]
    ch = pe.exposure_change(a.phis[rows_a], b.phis[rows_b], keep, fdr)
    df = pd.DataFrame({"index": np.arange(len(a.sig.labels)), "label": a.sig.labels, "dense_mem": dense_mem,
                       "exposure_a": pe.exposure(a.phis[rows_a], keep).exposure,
                       "exposure_b": pe.exposure(b.phis[rows_b], keep).exposure, "change": ch.change,
                       "gap_change": ch.gap_change, "t": ch.t, "df": ch.df, "p_value": ch.p,
                       "p_adjusted": ch.p_adjusted, "rose": ch.rose, "fell": ch.fell})
    if dense is not None and a is not dense:
        d_rows = dense.rows(models)
        df["pie"] = pe.pies(a.preds[rows_a], dense.preds[d_rows], a.num_classes)
    return df


def cross_fit_halves(a: Config, b: Config, dense: Config, models: list[int]) -> tuple[tuple, tuple]:
    """For a pair with dense on one side: dense memorisation and the change A - B, each from half of the
    dense models (by position), the other side's exposure from all its models (pe.cross_fit_correlation)."""
    other = b if a is dense else a
    exp_other = pe.exposure(other.phis[other.rows(models)], other.sig.keep[other.rows(models)]).exposure
    mem, change = [], []
    for h in (models[0::2], models[1::2]):
        rows = dense.rows(h)
        keep = dense.sig.keep[rows]
        mem.append(pe.memorisation(dense.preds[rows] == dense.sig.labels, keep).mem)
        exp_dense = pe.exposure(dense.phis[rows], keep).exposure
        change.append(exp_dense - exp_other if a is dense else exp_other - exp_dense)
    return tuple(mem), tuple(change)


def change_summary(pair: str, dataset: str, t: pd.DataFrame, n_boot: int, seed: int, level: float,
                   cross: tuple[tuple, tuple] | None = None) -> list[dict]:
    """One row for the pool ('all') and one per class: shares that rose / fell significantly and the rank
    correlation of dense memorisation with the change; with `cross` (a pair with dense on one side,
    cross_fit_halves) also the cross-fitted correlation, free of the noise the two share (NaN otherwise: a
    pair without dense shares no models with dense memorisation)."""
    out = []
    labels = t["label"].to_numpy()
    for cls, g in [("all", t)] + [(str(k), g) for k, g in t.groupby("label")]:
        r = pe.rank_correlation(g["dense_mem"], g["change"], n_boot, seed, level)
        sel = np.ones(len(t), bool) if cls == "all" else labels == g["label"].iloc[0]
        c = (pe.cross_fit_correlation(tuple(m[sel] for m in cross[0]), tuple(v[sel] for v in cross[1]), n_boot, seed,
                                      level) if cross is not None else {"rho": np.nan, "ci_low": np.nan, "ci_high": np.nan})
        out.append({"pair": pair, "dataset": dataset, "class": cls, "examples": len(g), "tested": int(g["p_value"].notna().sum()),
                    "share_rose": float(g["rose"].mean()), "share_fell": float(g["fell"].mean()),
                    "rose": int(g["rose"].sum()), "fell": int(g["fell"].sum()),
                    "mean_change": float(np.nanmean(g["change"])) if g["change"].notna().any() else np.nan,
                    "median_change": float(np.nanmedian(g["change"])) if g["change"].notna().any() else np.nan,
                    "spearman_mem_change": r["rho"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                    "spearman_cross_fit": c["rho"], "cross_fit_ci_low": c["ci_low"], "cross_fit_ci_high": c["ci_high"],
                    "level": level})
    return out


def pie_summary(a: Config, t: pd.DataFrame, n_boot: int, seed: int, level: float) -> dict:
    pie = t["pie"].to_numpy(bool)
    ex = pe.group_difference(t["exposure_a"], pie, n_boot, seed, level)
    mem = pe.group_difference(t["dense_mem"], pie, n_boot, seed, level)
    return {"experiment": a.name, "dataset": a.res["dataset"], "method": a.res["method"], "sparsity": a.res["sparsity"],
            "split": "pool", "pies": int(pie.sum()), "examples": len(pie), "share": float(pie.mean()),
            **{f"exposure_{k}": v for k, v in ex.items() if k not in ("n_group", "n_rest")},
            **{f"dense_mem_{k}": v for k, v in mem.items() if k not in ("n_group", "n_rest")}, "level": level}


def pair_attack_rows(a: Config, b: Config, targets: list[int], st: AttackSettings, n_boot: int, seed: int,
                     level: float) -> list[dict]:
    """Each pair attack and its one-model attack on A alone and on B alone, against the same targets with the
    same leave-one-out shadows (model t of both is the target pair), then paired differences."""
    scores: dict[str, list[np.ndarray]] = {}
    members = []
    for t in targets:
        ra, rb = a.sig.row(t), b.sig.row(t)
        sh_a = [r for r in shadow_rows(a.sig, ra) if a.sig.indices[r] in b.sig.indices]
        sh_b = [b.sig.row(a.sig.indices[r]) for r in sh_a]
        inp = PairInput(attack_input(a.sig, ra, sh_a), attack_input(b.sig, rb, sh_b))
        st_t = target_settings(st, t)
        for name, spec in PAIR_ATTACKS.items():
            scores.setdefault(name, []).append(spec.fn(inp, st_t).scores)
            for side, x in (("A", inp.a), ("B", inp.b)):
                scores.setdefault(f"{spec.single}@{side}", []).append(run_attack(spec.single, x, st_t).scores)
        members.append(a.sig.keep[ra])
    reps = bs.bootstrap_attacks(scores, members, bs.METRICS, n_boot, seed)
    rows = []
    for name, spec in PAIR_ATTACKS.items():
        for side, who in (("A", a), ("B", b)):
            single = f"{spec.single}@{side}"
            for metric in bs.METRICS:
                d = bs.difference(reps[name][metric], reps[single][metric], level)
                rows.append({"pair": f"{a.name} + {b.name}", "a": a.name, "b": b.name, "dataset": a.res["dataset"],
                             "attack": name, "versus": f"{spec.single} on {who.name}", "metric": metric,
                             "pair_value": d["a"], "alone_value": d["b"], "difference": d["difference"],
                             "ci_low": d["ci_low"], "ci_high": d["ci_high"], "p_value": d["p_value"], "level": level,
                             "num_targets": len(targets), "n_boot": n_boot, **floor_flags(metric, members)})
    return rows


# -- the stage -----------------------------------------------------------------------------------------------

def attacks_time(results_dir: Path, keys: list[str]) -> float | None:
    """Seconds the evaluation spent in its attacks on these configurations (the saved JSONs' time_s)."""
    unified = paths.mia_results_dir(results_dir, "unified")
    files = [unified / f"{k}.json" for k in keys if (unified / f"{k}.json").exists()]
    if not files:
        return None
    from utils.io import load_json

    return float(sum(a.get("time_s", 0.0) for f in files for a in load_json(f).get("attacks", {}).values()))


def run_stage(runs_dir, results_dir, pair_specs: list[str] | None = None, targets: str = "0", leave_out: int | None = 0,
              fdr: float = 0.05, n_boot: int = 1000, seed: int = 0, level: float = 0.95, pair_attack: bool = True,
              commands: list[str] = ()) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    results_dir = Path(results_dir)
    cfgs = [load_config(e) for e in find_experiment_dirs(runs_dir)]
    pairs = named_pairs(pair_specs, cfgs) if pair_specs else default_pairs(cfgs)
    for a, b in pairs:  # every pair checked before anything is written
        check_same_study(a, b)
    out = paths.per_example_dir(results_dir)
    dense = {c.res["dataset"]: c for c in cfgs if c.res["method"] == "dense"}
    tables, mem_of = {}, {}
    for c in cfgs:
        tables[c.key] = per_config_table(c, used_models([c], leave_out), results_dir)
        save_text(tables[c.key].to_csv(index=False), paths.per_example_file(results_dir, c.key))
    changes, pies, attacks, pair_tables = [], [], [], {}
    for a, b in pairs:
        d = dense.get(a.res["dataset"])
        models = used_models([a, b] + ([d] if d is not None else []), leave_out)
        mem_src = d if d is not None else b
        dense_mem = pe.memorisation(mem_src.preds[mem_src.rows(models)] == mem_src.sig.labels,
                                    mem_src.sig.keep[mem_src.rows(models)]).mem
        t = pair_table(a, b, models, d, dense_mem, fdr)
        pair_tables[(a.name, b.name, a.res["dataset"])] = t
        save_text(t.to_csv(index=False), paths.per_example_pair_file(results_dir, a.name, b.name, a.res["dataset"]))
        cross = cross_fit_halves(a, b, d, models) if d is not None and d in (a, b) else None
        changes += change_summary(f"{a.name} - {b.name}", a.res["dataset"], t, n_boot, seed, level, cross)
        if "pie" in t and b is d:
            pies.append(pie_summary(a, t, n_boot, seed, level))
        if pair_attack:
            wanted = target_indices(targets)
            common = [i for i in a.sig.indices if i in b.sig.indices]
            ts = common if wanted is None else [i for i in wanted if i in common]
            if not ts:
                raise UsageError(f"--targets {targets}: no model finished in both {a.name} and {b.name} (finished: {common})")
            attacks += pair_attack_rows(a, b, ts, AttackSettings(seed=seed), n_boot, seed, level)
    save_text(pd.DataFrame(changes).to_csv(index=False), out / paths.EXPOSURE_CHANGES)
    save_text(pd.DataFrame(pies).to_csv(index=False), out / paths.PIES)
    save_text(pd.DataFrame(attacks).to_csv(index=False), out / paths.PAIR_ATTACK)
    figs = figures.make_all(cfgs, tables, pair_tables, dense, results_dir)
    info = {"runs_dir": str(runs_dir), "pairs": [f"{a.name} - {b.name} ({a.res['dataset']})" for a, b in pairs],
            "leave_out": leave_out, "fdr": fdr, "n_boot": n_boot, "seed": seed, "level": level, "targets": targets,
            "test_split": "the test split is not analysed: the run directory holds predictions on the pool only",
            "figures": figs, "stage_time_s": time.perf_counter() - t0, "stage_cpu_s": time.process_time() - c0,
            "attacks_time_s": attacks_time(results_dir, [c.key for c in cfgs]), "commands": list(commands)}
    save_json(info, out / paths.STAGE_INFO)
    section.write(results_dir)
    return info


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default="./runs", help="runs directory of the study (every experiment in it)")
    p.add_argument("--results-dir", default="./results",
                   help="results root: reads mia/unified/scores/ when there, writes per_example/ and plots/")
    p.add_argument("--pairs", nargs="+", default=None, metavar="A:B",
                   help="pairs of configuration names, change A - B (default: mia/compare.py's, each pruned - dense, "
                        "dpf - static per sparsity, ...)")
    p.add_argument("--targets", default="0", help="target model(s) of the pair attack: an index, a list (0,1,2) or 'all'")
    p.add_argument("--leave-out", default="0", help="model left out of memorisation and exposure (an index, or 'none')")
    p.add_argument("--fdr", type=float, default=0.05, help="false discovery rate of the per-example tests (default 0.05)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the intervals (default 1000)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resamples and the attacks' random choices")
    p.add_argument("--no-pair-attack", action="store_true", help="skip the pair attack (the slowest part)")
    return p


@cli_main
def main(argv=None) -> None:
    args = parser().parse_args(argv)
    target_indices(args.targets)
    if args.leave_out != "none" and not args.leave_out.isdigit():
        raise UsageError(f"--leave-out takes a model index or 'none', got {args.leave_out!r}")
    if not 0 < args.fdr < 1 or not 0 < args.level < 1 or args.n_boot < 2:
        raise UsageError(f"--fdr and --level must be in (0, 1) and --n-boot >= 2, got {args.fdr}, {args.level}, {args.n_boot}")
    info = run_stage(args.runs_dir, args.results_dir, args.pairs, args.targets,
                     None if args.leave_out == "none" else int(args.leave_out), args.fdr, args.n_boot, args.seed,
                     args.level, not args.no_pair_attack, [shlex.join(["python", "-m", "analysis.stage", *(argv or [])])])
    at = info["attacks_time_s"]
    print(f"per-example stage: {len(info['pairs'])} pair(s) in {info['stage_time_s']:.1f} s ({info['stage_cpu_s']:.1f} s CPU)"
          + (f" (the attacks took {at:.1f} s on these configurations)" if at is not None else "")
          + f"; {paths.per_example_dir(args.results_dir)}")


if __name__ == "__main__":
    main(sys.argv[1:])
