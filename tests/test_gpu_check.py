"""benchmarks/gpu_check.py --device cpu --tiny: the GPU check's every stage on CPU in under a minute, so
it cannot rot while no GPU is at hand."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["passed"] and report["checks"]["csv_complete"] and report["enforced"] == ["csv_complete", "benchmarks_ran"]
    assert [row["k"] for row in report["pack_throughput"]] == [1, 2]
    assert all(row["packed_images_per_s"] > 0 for row in report["pack_throughput"])
    from training.precision import cpu_bf16

    assert report["train_throughput"][0]["precision"] == ("bf16" if cpu_bf16() else "fp32")  # --amp on this CPU
    study = report["mini_study"]
    assert study["returncode"] == 0 and study["configurations"] == ["dense", "dpf_0.9", "static_0.9"]
    assert set(study["per_configuration"]["dense"]) >= {"lira_tpr_at_1pct_fpr", "confidence_tpr_at_1pct_fpr"}
    summary = json.loads((tmp_path / "runs/dpf/sparsity_0.9/digits/shadows/4/experiment_summary.json").read_text())
    assert summary["pack_size"] == 5  # the study trained each configuration as one pack
    assert "PASSED" in r.stdout
