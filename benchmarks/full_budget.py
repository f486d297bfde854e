#!/usr/bin/env python
"""The study's accuracy claim at its full budget: ResNet-20 on CIFAR-10 (pool 50,000, so 25,000
training images a model), 200 epochs, one model per configuration. This script trains nothing; it reads
what the runs wrote and reports, so it can be run at any time, also while they train:

  R="--dataset npz --data-path ../shared/data/cifar10_jpeg_q75.npz --epochs 200 --num-shadows 0 --runs-dir full_budget --skip-existing"
  python run_experiment.py $R --prune --prune-method static --sparsity 0.9
  python run_experiment.py $R --prune --prune-method dpf --sparsity 0.9
  python run_experiment.py $R --name dpf75_0.9 --prune --prune-method dpf --sparsity 0.9 --target-epoch 150   # ramp to 75%
  python run_experiment.py $R                                                                                  # dense
  python benchmarks/full_budget.py --runs-dir full_budget --plot docs/full_budget.png

Killed, each command rerun as it is continues from its last epoch (--skip-existing, docs/long_runs.md).
Per configuration: epochs done, the last and best validation accuracy, test accuracy once COMPLETE, and
the validation-accuracy-vs-epoch curves of all of them in one figure (an unfinished run is drawn up to
where it stands, read from its resumable state).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from artifacts import paths  # noqa: E402
from utils.errors import UsageError, cli_main  # noqa: E402
from utils.io import atomic_path, load_json, load_torch  # noqa: E402


def runs(root: Path) -> dict[str, dict]:
    """Every target model under `root` (a directory holding config.json): its name, state, history, and
    test accuracy when COMPLETE. An unfinished model's history comes from its resumable state."""
    out = {}
    for cfg_path in sorted(root.rglob(paths.CONFIG)):
        d = cfg_path.parent
        if d.parent.name == "shadows":
            continue
        cfg = load_json(cfg_path)
        done = (d / paths.COMPLETE).exists()
        if done:
            s = load_json(d / paths.SUMMARY)
            history, test_acc = s["history"], s.get("test_acc")
        elif (d / paths.RESUME).exists():
            history, test_acc = load_torch(d / paths.RESUME)["history"], None
        else:
            history, test_acc = [], None
        out[cfg["name"]] = {"history": history, "test_acc": test_acc, "complete": done, "epochs": cfg["epochs"]}
    return out


def table(found: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, r in found.items():
        h = pd.DataFrame(r["history"])
        rows.append({"configuration": name, "epochs_done": len(h), "of": r["epochs"],
                     "val_acc_last": h["val_acc"].iloc[-1] if len(h) else None,
                     "val_acc_best": h["val_acc"].max() if len(h) else None,
                     "train_acc_last": h["train_acc"].iloc[-1] if len(h) else None,
                     "test_acc": r["test_acc"], "complete": r["complete"]})
    return pd.DataFrame(rows)


def plot(found: dict[str, dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in found.items():
        h = pd.DataFrame(r["history"])
        if len(h):
            ax.plot(h["epoch"], h["val_acc"], label=f"{name} ({len(h)}/{r['epochs']} epochs)", lw=1.2)
    ax.set(xlabel="epoch", ylabel="validation accuracy (held-out test images)",
           title="ResNet-20, CIFAR-10, 25,000 training images, the study's recipe")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)


@cli_main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default="full_budget", help="the runs' root (run_experiment.py --runs-dir)")
    p.add_argument("--plot", default=None, help="PNG of the validation-accuracy curves (default: none)")
    args = p.parse_args()
    root = Path(args.runs_dir)
    found = runs(root) if root.is_dir() else {}
    if not found:
        raise UsageError(f"no run under {root}: start them with the commands in this script's --help")
    print(machine())
    print(table(found).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.plot:
        plot(found, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
