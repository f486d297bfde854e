"""The report's section "Which examples pruning exposes", laid out from the per-example stage's tables
(analysis/stage.py); nothing here recomputes a statistic. analysis/report.py's render() calls lines() once; the
stage writes section.md and puts the section into an existing report.md (write()). This module imports
nothing from mia/ (analysis.report imports it), so it takes the report's table formatter as an argument.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from artifacts import paths
from utils.io import load_json, save_text

TITLE = "## Which examples pruning exposes"


def _f(v, digits: int = 3, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _ci(v, lo, hi, signed: bool = False) -> str:
    return f"{_f(v, signed=signed)} [{_f(lo, signed=signed)}, {_f(hi, signed=signed)}]"


def _pipe(df: pd.DataFrame) -> str:
    """The formatter write() uses when no report passes its own (section.md alone)."""
    cols = [str(c) for c in df.columns]
    rows = ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|", *rows])


def lines(results_dir: Path, markdown: Callable[[pd.DataFrame], str] = _pipe) -> list[str]:
    """The section's Markdown lines; one line saying how to run the stage when it has not run."""
    results_dir = Path(results_dir)
    out = paths.per_example_dir(results_dir)
    if not (out / paths.STAGE_INFO).exists():
        return [TITLE, "", "Not computed: run `python -m analysis.stage --runs-dir RUNS --results-dir "
                f"{results_dir}` (per-example memorisation, exposure, pruning-identified exemplars, the pair attack).", ""]
    info = load_json(out / paths.STAGE_INFO)
    level = int(round(100 * info["level"]))
    s = [TITLE, "", f"Per pool example, over each configuration's models except model {info['leave_out']} (the attacks' "
         "target): memorisation (Feldman & Zhang's estimator, P[correct | IN] - P[correct | OUT]) and exposure (the IN - OUT "
         "gap of LiRA's logit-scaled confidence, standardised; docs/attacks.md). A change is A's exposure minus B's; an "
         f"example rose or fell when its per-example test is significant after Benjamini-Hochberg at FDR {info['fdr']} "
         f"(so about {info['fdr']:.0%} of the examples called risen or fallen are expected to be false). "
         f"Intervals: {level}%, {info['n_boot']} bootstrap resamples of the examples. "
         f"Stage time {info['stage_time_s']:.1f} s"
         + (f" (the attacks: {info['attacks_time_s']:.1f} s)." if info.get("attacks_time_s") is not None else "."), ""]
    ch = pd.read_csv(out / paths.EXPOSURE_CHANGES) if (out / paths.EXPOSURE_CHANGES).stat().st_size > 1 else pd.DataFrame()
    if not ch.empty:
        d = ch[ch["class"].astype(str) == "all"]
        s += ["### How pruning moves each example's exposure", "", markdown(pd.DataFrame({
            "pair (A - B)": d["pair"] + " (" + d["dataset"] + ")",
            "rose (share)": [f"{r} ({_f(x)})" for r, x in zip(d["rose"], d["share_rose"])],
            "fell (share)": [f"{r} ({_f(x)})" for r, x in zip(d["fell"], d["share_fell"])],
            "median change": d["median_change"].map(lambda v: _f(v, signed=True)),
            "Spearman(dense mem, change)": [_ci(*r, signed=True) for r in d[["spearman_mem_change", "ci_low", "ci_high"]].itertuples(index=False)],
            "cross-fitted": [_ci(*r, signed=True) if pd.notna(r[0]) else "" for r in  # absent before the column was
                             d.reindex(columns=["spearman_cross_fit", "cross_fit_ci_low", "cross_fit_ci_high"]).itertuples(index=False)],
        })), "", "With dense in the pair, the plain rho shares the dense models' noise (biased below 0 when pruning "
              "changes nothing); the cross-fitted rho takes memorisation and the change from disjoint halves of "
              "the dense models (conservative: biased towards 0). docs/attacks.md.", "", f"By class: [{paths.EXPOSURE_CHANGES}]({paths.PER_EXAMPLE}/{paths.EXPOSURE_CHANGES}).", ""]
    pies = pd.read_csv(out / paths.PIES) if (out / paths.PIES).stat().st_size > 1 else pd.DataFrame()
    if not pies.empty:
        s += ["### Pruning-identified exemplars", "", "Examples whose modal prediction over a pruned configuration's models "
              "differs from the dense models' (Hooker et al. 2019), on the pool (" + info["test_split"] + "); their "
              "exposure (in the pruned configuration) and dense memorisation minus the rest's.", "", markdown(pd.DataFrame({
                  "configuration": pies["experiment"], "PIEs (share)": [f"{n} ({_f(x)})" for n, x in zip(pies["pies"], pies["share"])],
                  "Δ exposure (PIE - rest)": [_ci(*r, signed=True) for r in pies[["exposure_difference", "exposure_ci_low", "exposure_ci_high"]].itertuples(index=False)],
                  "Δ dense memorisation": [_ci(*r, signed=True) for r in pies[["dense_mem_difference", "dense_mem_ci_low", "dense_mem_ci_high"]].itertuples(index=False)],
              })), ""]
    pa = pd.read_csv(out / paths.PAIR_ATTACK) if (out / paths.PAIR_ATTACK).stat().st_size > 1 else pd.DataFrame()
    if not pa.empty:
        d = pa[pa["metric"].isin(["auc", "tpr_at_1pct_fpr"])]
        s += ["### The attacker who sees both models", "", "Model t of A and of B released together (same training subset): "
              "a 2-D likelihood ratio on both models' confidences against the same attack on one model alone, paired "
              f"differences with {level}% intervals (`*`: below the FPR floor, not measured).", "", markdown(pd.DataFrame({
                  "pair": d["pair"], "attack": d["attack"], "versus": d["versus"], "metric": d["metric"],
                  "pair attack": d["pair_value"].map(_f), "alone": d["alone_value"].map(_f),
                  "difference": [_ci(*r, signed=True) + (" *" if f else "") for *r, f in
                                 d[["difference", "ci_low", "ci_high", "below_floor"]].itertuples(index=False)]})),
              "", f"Every metric: [{paths.PAIR_ATTACK}]({paths.PER_EXAMPLE}/{paths.PAIR_ATTACK}).", ""]
    for name, where in info.get("figures", {}).items():
        if str(where).startswith("skipped"):
            s += [f"- {name}: {where}"]
        else:
            s += [f"![{name}]({Path(where).relative_to(results_dir).as_posix()})", ""]
    return s + [""]


def write(results_dir: Path) -> None:
    """section.md, and the section in report.md when one exists (replacing the one there, or before "## Reproduce")."""
    results_dir = Path(results_dir)
    text = "\n".join(lines(results_dir))
    save_text(text, paths.per_example_dir(results_dir) / paths.SECTION)
    report = results_dir / paths.REPORT
    if not report.exists():
        return
    page = report.read_text()
    start = page.find(TITLE)
    if start >= 0:
        end = page.find("\n## ", start + len(TITLE))
        page = page[:start] + text.rstrip("\n") + "\n" + (page[end:] if end >= 0 else "")
    else:
        at = page.find("## Reproduce")
        page = page[:at] + text + page[at:] if at >= 0 else page + "\n" + text
    save_text(page, report)
