#!/usr/bin/env python
"""The GPU check: one command, a few minutes on one GPU, no network. Prints the device, runs the training
throughput benchmark (ours vs plain, the training precision, channels_last, with and without compile), the
pack benchmark, and a mini study on CIFAR-10 from ../shared/data (dense, static and DPF at 0.9, a few
shadows, a few epochs, every attack); checks that the results CSV is complete and that LiRA beats the
confidence threshold at 1% FPR; writes every figure into one JSON (OUT/gpu_check.json). Exit 1 when a
check fails.

  python benchmarks/gpu_check.py                          # CUDA, the figures for docs/benchmarks.md
  python benchmarks/gpu_check.py --device cpu --tiny      # digits, tiny sizes: under a minute (tests/test_gpu_check.py)

--tiny trains models too small to leak reliably, so there the LiRA check is reported, not enforced.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import pack_throughput, train_throughput
from benchmarks.common import SHARED_CIFAR, machine

ROOT = Path(__file__).resolve().parents[1]

# The mini study (train.py flags). GPU: 3 configurations x 9 models (each on ~2,200 of a 5,000-image pool,
# 4 of 9 models per image) x 15 epochs, each configuration one pack (auto K), then every attack.
# tiny: digits, a 200-image pool, 100 test images, 5 models per configuration in one pack, 2 epochs.
STUDY = ["--methods", "dense", "static", "dpf", "--sparsities", "0.9"]
FULL = ["--dataset", "npz", "--data-path", str(SHARED_CIFAR), "--pool-size", "5000", "--epochs", "15",
        "--num-shadows", "8"]
TINY = ["--dataset", "digits", "--pool-size", "200", "--test-size", "100", "--epochs", "2", "--batch-size", "32", "--num-shadows", "4",
        "--pack", "5", "--sens-draws", "2"]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="digits and tiny sizes (the test suite's run, CPU)")
    p.add_argument("--out", default="gpu_check", help="directory of the mini study and gpu_check.json")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile throughput run")
    return p.parse_args(argv)


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def throughput(a) -> list[dict]:
    section("training throughput (benchmarks/train_throughput.py)")
    base = train_throughput.parser().parse_args(
        ["--device", a.device] + (["--iters", "2", "--batch-size", "16"] if a.tiny else ["--iters", "200"]))
    rows = [train_throughput.measure(base)]
    if not (a.tiny or a.no_compile):
        base.compile = True
        rows.append(train_throughput.measure(base))
    return rows


def packs(a) -> list[dict]:
    section("packed training (benchmarks/pack_throughput.py)")
    args = ["--device", a.device] + (["--packs", "1", "2", "--iters", "2", "--batch-size", "16", "--warmup", "1"]
                                     if a.tiny else ["--packs", "1", "4", "16", "--iters", "50", "--warmup", "10"])
    return pack_throughput.measure(pack_throughput.parser().parse_args(args))


def mini_study(a, out: Path) -> dict:
    section("mini study (train.py, every attack)")
    if not a.tiny and not SHARED_CIFAR.exists():
        return {"error": f"{SHARED_CIFAR} not found (the mini study reads CIFAR-10 from ../shared/data)"}
    cmd = [sys.executable, str(ROOT / "train.py"), *STUDY, *(TINY if a.tiny else FULL), "--device", a.device,
           "--runs-dir", str(out / "runs"), "--results-dir", str(out / "results"), "--summary-dir", str(out)]
    print(" ".join(cmd[1:]), flush=True)
    t = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t
    print(r.stdout[-2000:], r.stderr[-2000:] if r.returncode else "", sep="", flush=True)
    res = {"command": " ".join(["python", *cmd[1:]]), "returncode": r.returncode, "wall_s": wall}
    if r.returncode:
        return res
    return {**res, **check_results(out / "results" / "comprehensive_mia_results.csv")}


def check_results(csv: Path) -> dict:
    """Every configuration has every attack's AUC and TPR at 1% FPR; LiRA's TPR at 1% FPR against the
    confidence threshold's, per configuration."""
    import pandas as pd

    from mia.attacks import ATTACKS

    df = pd.read_csv(csv)
    cols = [f"{att}_{m}" for att in ATTACKS for m in ("auc", "tpr_at_1pct_fpr")]
    missing = [c for c in cols if c not in df.columns]
    empty = [c for c in cols if c in df.columns and df[c].isna().any()]
    per_config = {row["experiment"]: {"test_acc": row["test_acc"], "lira_auc": row["lira_auc"],
                                      "lira_tpr_at_1pct_fpr": row["lira_tpr_at_1pct_fpr"],
                                      "confidence_tpr_at_1pct_fpr": row["confidence_tpr_at_1pct_fpr"]}
                  for _, row in df.iterrows()} if not missing else {}
    beats = bool(per_config) and all(v["lira_tpr_at_1pct_fpr"] > v["confidence_tpr_at_1pct_fpr"]
                                     for v in per_config.values())
    return {"configurations": sorted(df["experiment"]), "csv_complete": not missing and not empty and len(df) == 3,
            "missing_columns": missing, "empty_columns": empty, "lira_beats_confidence_at_1pct": beats,
            "per_configuration": per_config}


def stage(fn, *args):
    """A stage's figures, or {"error": ...}: one failing stage (say, torch.compile without a compiler)
    does not cost the others' figures."""
    try:
        return fn(*args)
    except Exception as e:  # reported in the JSON and the summary; the checks then fail
        print(f"stage {fn.__name__} failed: {type(e).__name__}: {e}", flush=True)
        return {"error": f"{type(e).__name__}: {e}"}


def main(argv=None) -> int:
    a = parse(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    section("device")
    print(machine(), flush=True)
    import torch

    report = {"machine": machine(), "device": a.device, "tiny": a.tiny,
              "device_name": torch.cuda.get_device_name(torch.device(a.device)) if a.device.startswith("cuda") else "cpu",
              "train_throughput": stage(throughput, a), "pack_throughput": stage(packs, a),
              "mini_study": stage(mini_study, a, out)}
    study = report["mini_study"]
    checks = {"csv_complete": bool(study.get("csv_complete")),
              "lira_beats_confidence_at_1pct": bool(study.get("lira_beats_confidence_at_1pct"))}
    checks["benchmarks_ran"] = all(not (isinstance(report[n], dict) and "error" in report[n])
                                   for n in ("train_throughput", "pack_throughput"))
    enforced = ["csv_complete", "benchmarks_ran"] + ([] if a.tiny else ["lira_beats_confidence_at_1pct"])
    report.update(checks=checks, enforced=enforced, passed=all(checks[c] for c in enforced),
                  wall_s=time.time() - t0)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=_json))
    section("summary")
    for name in ("train_throughput", "pack_throughput", "mini_study"):
        if isinstance(report[name], dict) and "error" in report[name]:
            print(f"{name}: FAILED ({report[name]['error']})")
    for r in report["train_throughput"] if isinstance(report["train_throughput"], list) else []:
        print(f"train throughput ({r['precision']}, compile {r['compile']}): ours {r['ours_images_per_s']:.0f} "
              f"images/s, plain {r['baseline_images_per_s']:.0f}, {r['ratio']:.2f}x")
    for r in report["pack_throughput"] if isinstance(report["pack_throughput"], list) else []:
        print(f"pack K={r['k']}: {r['packed_images_per_s']:.0f} images/s aggregate, {r['ratio']:.2f}x one by one, "
              f"{r['ops_per_step_packed']} operators per step (one by one {r['ops_per_step_one_by_one']})")
    for c, v in checks.items():
        print(f"check {c}: {'pass' if v else 'FAIL'}{'' if c in enforced else ' (not enforced with --tiny)'}")
    print(f"{'PASSED' if report['passed'] else 'FAILED'} in {report['wall_s']:.0f} s -> {out / 'gpu_check.json'}")
    return 0 if report["passed"] else 1


def _json(v):
    """numpy scalars (from the CSV) as Python numbers; anything else as its string."""
    return v.item() if hasattr(v, "item") else str(v)


if __name__ == "__main__":
    sys.exit(main())
