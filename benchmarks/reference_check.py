#!/usr/bin/env python
"""Regression check against the committed reference study (docs/results.md): rerun one configuration of
`train.py --preset cifar10-cpu` (its 9 models, every one a target, every attack) and say whether its
accuracy and leakage fall inside the committed intervals. Run it after changing training, pruning or attack
code: a figure outside its interval is a behaviour change to explain.

  python benchmarks/reference_check.py --data-path ../shared/data/cifar10_jpeg_q75.npz              # dense, ~8 min
  python benchmarks/reference_check.py --config dpf_0.9 --data-path ../shared/data/cifar10_jpeg_q75.npz
  python benchmarks/reference_check.py --config static_0.9 --data-dir ./datasets      # torchvision's CIFAR-10

The reference was trained on the JPEG copy of CIFAR-10 (REFERENCE.md section 8) with --dataset npz; torchvision's
lossless CIFAR-10 gives slightly other models (expect accuracy a point or two higher, leakage within noise).
Checked: each attack's AUC (mean over the 9 targets) inside the committed 95% interval of that configuration, and
the mean test and train accuracy inside the committed mean +- its t interval over the 9 models. Exit 1 when a
figure falls outside. Runs already trained under --out are reused (--skip-existing).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmarks.common import machine
from artifacts import paths
from analysis.plots import mean_interval
from utils.errors import UsageError, cli_main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"


def config_flags(name: str) -> list[str]:
    """'dense' | '<method>_<sparsity>' -> train.py's --methods/--sparsities for that one configuration."""
    if name == "dense":
        return ["--methods", "dense"]
    method, _, s = name.rpartition("_")
    try:
        float(s)
    except ValueError:
        raise UsageError(f"--config takes dense or <method>_<sparsity> (e.g. dpf_0.9), got {name!r}") from None
    return ["--methods", method, "--sparsities", s]


def compare(name: str, ref_dir: Path, new_results: Path) -> pd.DataFrame:
    """One row per checked figure: reference value and interval, the rerun's value, inside or not."""
    ref_iv = pd.read_csv(ref_dir / paths.INTERVALS)
    ref_iv = ref_iv[(ref_iv["experiment"] == name) & (ref_iv["metric"] == "auc")]
    new_iv = pd.read_csv(new_results / paths.INTERVALS)
    new_iv = new_iv[(new_iv["experiment"] == name) & (new_iv["metric"] == "auc")].set_index("attack")
    rows = [{"figure": f"{r.attack} AUC", "reference": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high,
             "rerun": new_iv.loc[r.attack, "value"] if r.attack in new_iv.index else float("nan")}
            for r in ref_iv.itertuples()]
    ref_tr = pd.read_csv(ref_dir / paths.TRAINING_RESULTS)
    new_tr = pd.read_csv(paths.mia_results_dir(new_results, "unified") / paths.TRAINING_RESULTS)
    for col in ("test_acc", "train_acc"):
        m, lo, hi = mean_interval(ref_tr.loc[ref_tr["experiment"] == name, col])
        rows.append({"figure": f"{col} (mean over models)", "reference": m, "ci_low": lo, "ci_high": hi,
                     "rerun": float(new_tr.loc[new_tr["experiment"] == name, col].mean())})
    d = pd.DataFrame(rows)
    d["inside"] = (d["rerun"] >= d["ci_low"]) & (d["rerun"] <= d["ci_high"])
    return d


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="dense", help="the configuration to rerun: dense or <method>_<sparsity> (default: dense)")
    p.add_argument("--out", default="/tmp/reference_check", help="runs and results of the rerun")
    p.add_argument("--reference", default=str(REFERENCE), help="the committed reference tables (default: docs/reference)")
    p.add_argument("--data-path", default=None, help="CIFAR-10 as .npz (--dataset npz); default: torchvision's CIFAR-10")
    p.add_argument("--data-dir", default=None, help="torchvision's CIFAR-10 directory (train.py --data-dir)")
    args = p.parse_args(argv)
    ref = Path(args.reference)
    if not (ref / paths.INTERVALS).exists():
        raise UsageError(f"{ref / paths.INTERVALS} missing: the committed reference tables are not there")
    out = Path(args.out)
    data = ["--dataset", "npz", "--data-path", args.data_path] if args.data_path else []
    data += ["--data-dir", args.data_dir] if args.data_dir else []
    print(machine())
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--preset", "cifar10-cpu", *config_flags(args.config),
                    *data, "--runs-dir", str(out / "runs"), "--results-dir", str(out / "results"),
                    "--summary-dir", str(out), "--skip-existing"], check=True, cwd=ROOT)
    d = compare(args.config, ref, out / "results")
    if d.empty:
        raise UsageError(f"{args.config} is not a configuration of the reference study ({ref})")
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(d.to_string(index=False))
    bad = d[~d["inside"]]
    print(f"{args.config}: {len(d) - len(bad)} of {len(d)} figures inside the committed 95% intervals"
          + (f"; outside: {', '.join(bad['figure'])}" if len(bad) else ""))
    if len(bad):
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
