"""Every output path of the pipeline comes from this module (one place to change the layout).

runs/<method>/sparsity_<s>/<dataset>/          experiment directory (dense: runs/dense/<dataset>/;
                                                 defended: runs/<method>+<defense>/..., e.g. runs/dense+ppb/<dataset>/)
    config.json  keep_matrix.npy  labels.npy     experiment-wide: recipe, [M, pool] membership, pool labels
    best_model.pth  last_model.pth  experiment_summary.json  keep.npy  logits.npy  sensitivity.npy  COMPLETE
    rewind.pth                                   dense models only: lth's rewind points
                                                 model 0 (the default target) lives at the root
    shadows/<i>/...                              model i >= 1, same files
results/mia/<suite>/                             attack results (JSON per experiment + CSV)
    scores/<experiment>_<dataset>/labels.npy     int64 [pool]
    scores/<experiment>_<dataset>/target_<t>/members.npy, <attack>.npy
                                                 bool [pool] membership and float64 [pool] scores of target t
results/attack_intervals.csv  paired_comparisons.csv  per_class_auc.csv  report.md  plots/
                                                 the study report (mia/compare.py, analysis/report.py)
results/per_example/                             the per-example stage (analysis/stage.py)
    <experiment>_<dataset>/per_example.csv       one row per pool example of a configuration
    pairs/<A>__<B>_<dataset>.csv                 one row per pool example of a pair
    exposure_changes.csv  pies.csv  pair_attack.csv  stage.json  section.md  figures/<figure>.csv
"""
from __future__ import annotations

from pathlib import Path

# Artifact file names (shared by writers and readers).
CONFIG = "config.json"
BEST_MODEL = "best_model.pth"
LAST_MODEL = "last_model.pth"
SUMMARY = "experiment_summary.json"
KEEP = "keep.npy"                # bool [pool]: the membership this model's training run actually used
LOGITS = "logits.npy"            # float32 [pool, queries, classes], eval mode
SENSITIVITY = "sensitivity.npy"  # float32 [pool, classes], SAMIA sensitivity
COMPLETE = "COMPLETE"            # written last: the model directory is finished
RESUME = "resume.pth"            # a model's resumable state mid-run (training/resume.py); gone once COMPLETE
REWIND = "rewind.pth"            # a dense model's states at the end of epochs 0, 1, 2, 4 (lth's rewind points;
                                 # pruning/iterative.py REWIND_EPOCHS), kept with the model
KEEP_MATRIX = "keep_matrix.npy"  # bool [num_models, pool], experiment directory only
LABELS = "labels.npy"            # int64 [pool], experiment directory only
SHADOWS = "shadows"
# Study-level results (the report and its tables), at the results root.
COMPREHENSIVE = "comprehensive_mia_results"  # stem of the wide and long attack tables (.csv, _long.csv)
TRAINING_RESULTS = "training_results.csv"
INTERVALS = "attack_intervals.csv"
PAIRED = "paired_comparisons.csv"
PER_CLASS = "per_class_auc.csv"
FINDINGS = "findings.csv"  # the report's answers to the study's expectations (analysis/findings.py)
REPORT = "report.md"
PLOTS = "plots"
# The per-example stage (analysis/stage.py), under results/per_example/.
PER_EXAMPLE = "per_example"
EXPOSURE_CHANGES = "exposure_changes.csv"
PIES = "pies.csv"
PAIR_ATTACK = "pair_attack.csv"
STAGE_INFO = "stage.json"
SECTION = "section.md"


def sparsity_tag(sparsity: float) -> str:
    """0.9 -> '0.9', 0.95 -> '0.95' (shortest exact repr, stable across runs)."""
    return repr(float(sparsity))


def method_label(method: str, defense: str = "none") -> str:
    """'dpf', or 'dpf+ppb' for a defended configuration: its name, directory and the tables' method column."""
    return method if defense == "none" else f"{method}+{defense}"


def config_name(method: str, sparsity: float, defense: str = "none") -> str:
    """A configuration's default name: 'dense', or '<method>_<tag>' with the directory's tag, so two
    configurations share a name exactly when they share a directory (0.9 and 0.9000001 do not);
    '+<defense>' after it when defended ('dense+ppb', 'dpf_0.9+ppb')."""
    base = method if method == "dense" else f"{method}_{sparsity_tag(sparsity)}"
    return method_label(base, defense)


def experiment_dir(runs_dir: str | Path, method: str, sparsity: float, dataset: str, defense: str = "none") -> Path:
    """Directory of one configuration (target + shadows); a defended one under '<method>+<defense>/'."""
    runs_dir, label = Path(runs_dir), method_label(method, defense)
    if method == "dense":
        return runs_dir / label / dataset
    return runs_dir / label / f"sparsity_{sparsity_tag(sparsity)}" / dataset


def model_dir(exp_dir: str | Path, index: int) -> Path:
    """Model 0 (target) at the experiment root, model i >= 1 in shadows/<i>/."""
    exp_dir = Path(exp_dir)
    return exp_dir if index == 0 else exp_dir / SHADOWS / str(index)


def mia_results_dir(results_dir: str | Path, suite: str) -> Path:
    """results/mia/<suite>/ for suite in {'advanced', 'wemem', 'unified'}."""
    return Path(results_dir) / "mia" / suite


def find_experiments(runs_dir: str | Path) -> list[Path]:
    """Every experiment directory under runs_dir (those holding keep_matrix.npy), sorted."""
    runs_dir = Path(runs_dir)
    return sorted(p.parent for p in runs_dir.rglob(KEEP_MATRIX) if SHADOWS not in p.parent.parts)


def scores_dir(suite_dir: str | Path, experiment_id: str) -> Path:
    """Saved per-example attack scores of one experiment (one evaluation suite's results directory)."""
    return Path(suite_dir) / "scores" / experiment_id


def score_file(scores: str | Path, target: int, attack: str) -> Path:
    """float64 [pool]: `attack`'s score of every pool example against model `target` (higher = member)."""
    return Path(scores) / f"target_{target}" / f"{attack}.npy"


def members_file(scores: str | Path, target: int) -> Path:
    """bool [pool]: which pool examples model `target` trained on (the labels its scores are judged by)."""
    return Path(scores) / f"target_{target}" / "members.npy"


def per_example_dir(results_dir: str | Path) -> Path:
    """results/per_example/: every table of the per-example stage."""
    return Path(results_dir) / PER_EXAMPLE


def per_example_file(results_dir: str | Path, experiment_id: str) -> Path:
    """One configuration's per-example table (experiment_id: <experiment>_<dataset>)."""
    return per_example_dir(results_dir) / experiment_id / "per_example.csv"


def per_example_pair_file(results_dir: str | Path, a: str, b: str, dataset: str) -> Path:
    """One pair's per-example table (change A - B)."""
    return per_example_dir(results_dir) / "pairs" / f"{a}__{b}_{dataset}.csv"


def per_example_figure(results_dir: str | Path, name: str) -> tuple[Path, Path]:
    """A per-example figure: its PNG under plots/ (beside the report's other figures) and its table."""
    return Path(results_dir) / PLOTS / f"per_example_{name}.png", per_example_dir(results_dir) / "figures" / f"{name}.csv"
