"""What an evaluation's result files hold, for the code that writes them (mia/evaluate.py) and the code
that reads them (analysis/: comparisons, findings, report, plots): experiment ids, metric and column
names, the floor flag of a wide table, and the comparison settings and `Study` that analysis/compare.py
computes and analysis/report.py lays out. Pure data: no attack and no statistic is computed here."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

# Every metric an attack's summary holds, in table order (mia/metrics.compute_metrics).
METRICS = ("auc", "accuracy", "advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "tpr_at_0.01pct_fpr",
           "eps_lower_bound")
# Identity and utility columns that open each row of the wide table (<suite>_mia_results.csv).
ROW_KEYS = ("experiment", "method", "sparsity", "dataset", "arch", "shadows", "train_acc", "test_acc")
OWN = "own"  # the shadows column when each target's shadows are its own configuration's other models
# Columns of the long table (<suite>_mia_results_long.csv): one row per number.
LONG_KEYS = ("experiment", "method", "sparsity", "dataset", "attack", "target", "metric", "value", "below_floor")


def experiment_id(res: dict) -> str:
    """<experiment>_<dataset>: the name of an evaluation's JSON file and scores directory."""
    return f"{res['experiment']}_{res['dataset']}"


def flagged(df: pd.DataFrame, col: str) -> pd.Series:
    """The boolean <col>_below_floor column of a wide table; False where absent (AUC, older tables)."""
    flag = f"{col}_below_floor"
    return df[flag].fillna(False).astype(bool) if flag in df else pd.Series(False, index=df.index)


@dataclass
class Settings:
    """How the configurations are compared (the evaluation config's bootstrap fields, configs/evaluation.py)."""
    n_boot: int = 1000  # bootstrap resamples
    seed: int = 0  # seed of the resamples (the same for every configuration: that pairs them)
    level: float = 0.95  # confidence level of the intervals; 1 - level is the corrected significance level
    min_class_count: int = 10  # a class with fewer members or non-members (some target) is not ranked


@dataclass
class Study:
    """The comparisons of a study: the tables analysis/compare.py writes (attack_intervals.csv,
    paired_comparisons.csv, per_class_auc.csv), the problems met, and the settings that made them."""
    intervals: pd.DataFrame
    paired: pd.DataFrame
    per_class: pd.DataFrame
    failures: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
