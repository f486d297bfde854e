"""The original study's three expectations, answered from a study's paired comparisons (docs/attacks.md,
"Findings"):

  1. accuracy: dense > DPF > static at equal sparsity, and lower at higher sparsity;
  2. leakage: dense the most vulnerable, DPF close to static (depending on the attack);
  3. leakage falls as sparsity rises.

Each answer is one row per sparsity (or sparsity step): "holds", "reversed" or "not resolved", from the
paired difference, its interval and its corrected p-value (mia/compare.py: one Benjamini-Hochberg family for
every mark of the report, so a verdict other than "not resolved" is exactly a marked cell). Nothing here
recomputes an attack or an interval; it reads the paired table and the per-model training table.

Why the fit columns: a model that has not fit its training data has little to leak, so a configuration that
fits less leaks less for that reason alone. Every leakage row therefore carries both configurations' train
accuracy and train-test gap, and says when the leakage difference comes with a difference in fit (a paired
interval of train accuracy over the models that excludes zero, in the direction of the leakage difference).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import bootstrap as bs

# A configuration whose models' mean train accuracy (eval mode, saved checkpoint) is below this has not fit its
# training subset: its leakage says little about the method (the reference study's regime fits above it).
FIT_TRAIN_ACC = 0.9
HOLDS, REVERSED, UNRESOLVED = "holds", "reversed", "not resolved"
CLOSE = "DPF leaks as static does"  # expected sign 0: holds while no difference is resolved
FINDING_COLS = ["expectation", "claim", "sparsity", "pair", "attack", "metric", "verdict", "difference", "ci_low",
                "ci_high", "p_adjusted", "attacks_agree", "attacks_opposite", "attacks_tested", "a_train_acc",
                "b_train_acc", "a_gap", "b_gap", "fit_difference", "fit_ci_low", "fit_ci_high", "fit_note"]


def verdict(row: pd.Series | None, expected_sign: int) -> str:
    """holds / reversed when the difference is significant after the report's correction (in / against the
    expected direction), else not resolved."""
    if row is None or not bool(row.get("significant") is True or row.get("significant") == 1):
        return UNRESOLVED
    return HOLDS if np.sign(row["difference"]) == expected_sign else REVERSED


class Configs:
    """The study's configurations by (method, sparsity) within one dataset, and per-model fit."""

    def __init__(self, intervals: pd.DataFrame, training: pd.DataFrame, dataset: str):
        ids = intervals[intervals["dataset"] == dataset].drop_duplicates("experiment")
        self.name = {(r.method, float(r.sparsity)): r.experiment for r in ids.itertuples()}
        t = training[training["dataset"].astype(str) == str(dataset)]
        self.models = {e: g.set_index("model_index") for e, g in t.groupby("experiment")}

    def get(self, method: str, sparsity: float) -> str | None:
        return self.name.get((method, float(sparsity)))

    def sparsities(self, method: str) -> list[float]:
        return sorted(s for m, s in self.name if m == method)

    def pruned_methods(self) -> list[str]:
        return list(dict.fromkeys(m for m, s in self.name if m != "dense" and s > 0))

    def fit(self, experiment: str) -> tuple[float, float]:
        """(mean train accuracy, mean train-test gap) over the configuration's models; NaN when unknown."""
        g = self.models.get(experiment)
        if g is None or g.empty:
            return np.nan, np.nan
        return float(g["train_acc"].mean()), float((g["train_acc"] - g["test_acc"]).mean())

    def fit_difference(self, a: str, b: str, level: float) -> dict | None:
        """Paired train-accuracy difference A - B over the models both trained (model i of each: the same subset)."""
        ga, gb = self.models.get(a), self.models.get(b)
        if ga is None or gb is None:
            return None
        common = sorted(set(ga.index) & set(gb.index))
        if len(common) < 2:
            return None
        return bs.accuracy_difference(ga.loc[common, "train_acc"].tolist(), gb.loc[common, "train_acc"].tolist(), level)


def _row(paired: pd.DataFrame, a: str | None, b: str | None, attack: str, metric: str) -> pd.Series | None:
    if a is None or b is None:
        return None
    r = paired[(paired["a"] == a) & (paired["b"] == b) & (paired["attack"].fillna("") == attack)
               & (paired["metric"] == metric)]
    return r.iloc[0] if len(r) else None


def _agreement(paired: pd.DataFrame, a: str, b: str, expected_sign: int) -> tuple[int, int, int]:
    """(attacks whose AUC difference is significant in the expected direction, against it, attacks tested)."""
    d = paired[(paired["a"] == a) & (paired["b"] == b) & (paired["metric"] == "auc") & (paired["family"] != "")]
    sig = d[d["significant"] == True]  # noqa: E712 (bools and NaN)
    if expected_sign == 0:  # "close": an attack agrees when it resolves no difference
        return len(d) - len(sig), len(sig), len(d)
    agree = int((np.sign(sig["difference"]) == expected_sign).sum())
    return agree, len(sig) - agree, len(d)


def finding(configs: Configs, paired: pd.DataFrame, expectation: str, claim: str, sparsity: float,
            a: tuple[str, float], b: tuple[str, float], attack: str, metric: str, expected_sign: int,
            level: float) -> dict:
    """One row: the verdict on "A - B has the sign `expected_sign`" (a, b: (method, sparsity)), with the fit
    of both configurations; "cannot state" naming what the study lacks."""
    na, nb = configs.get(*a), configs.get(*b)
    label = lambda m, x, n: n or (m if m == "dense" else f"{m}_{x:g}")  # noqa: E731
    out = {"expectation": expectation, "claim": claim, "sparsity": sparsity,
           "pair": f"{label(*a, na)} - {label(*b, nb)}", "attack": attack, "metric": metric}
    missing = [f"{m}{'' if m == 'dense' else f' at sparsity {x:g}'}" for (m, x), n in ((a, na), (b, nb)) if n is None]
    if missing:
        return {**out, "verdict": f"cannot state: {' and '.join(missing)} not in the study"}
    r = _row(paired, na, nb, attack, metric)
    if r is None:
        what = "test accuracy" if metric == "test_acc" else f"{attack} {metric}"
        return {**out, "verdict": f"cannot state: {na} - {nb} has no paired {what}"}
    (ta, gap_a), (tb, gap_b) = configs.fit(na), configs.fit(nb)
    out |= {"verdict": verdict(r, expected_sign), "difference": r["difference"], "ci_low": r["ci_low"],
            "ci_high": r["ci_high"], "p_adjusted": r.get("p_adjusted"), "a_train_acc": ta, "b_train_acc": tb,
            "a_gap": gap_a, "b_gap": gap_b, "fit_note": ""}
    if metric != "test_acc":
        out["attacks_agree"], out["attacks_opposite"], out["attacks_tested"] = _agreement(paired, na, nb, expected_sign)
        fd = configs.fit_difference(na, nb, level)
        notes = [f"{n} has not fit its training data (train acc {t:.2f} < {FIT_TRAIN_ACC})"
                 for n, t in ((na, ta), (nb, tb)) if np.isfinite(t) and t < FIT_TRAIN_ACC]
        if fd is not None:
            out |= {"fit_difference": fd["difference"], "fit_ci_low": fd["ci_low"], "fit_ci_high": fd["ci_high"]}
            fit_moves = fd["ci_low"] > 0 or fd["ci_high"] < 0
            if fit_moves and np.sign(fd["difference"]) == np.sign(r["difference"]):
                notes.append(f"the less-leaking configuration also fits less (Δ train acc {fd['difference']:+.3f} "
                             f"[{fd['ci_low']:+.3f}, {fd['ci_high']:+.3f}]): part of the difference is fit, not method")
        out["fit_note"] = "; ".join(notes)
    return out


def study_findings(paired: pd.DataFrame, intervals: pd.DataFrame, training: pd.DataFrame, attack: str,
                   level: float = 0.95) -> pd.DataFrame:
    """Every finding of every dataset of the study (dataset + FINDING_COLS), in the order of the three
    expectations. The sparsities are those of the study's pruned configurations; a finding whose
    configurations the study lacks is a row saying so."""
    cols = ["dataset", *FINDING_COLS]
    if intervals.empty:
        return pd.DataFrame([], columns=cols)
    rows = []
    for ds in dict.fromkeys(intervals["dataset"]):
        c = Configs(intervals, training, ds)
        methods = c.pruned_methods()
        sparsities = sorted({s for m in methods for s in c.sparsities(m)})
        dense = ("dense", 0.0)

        def add(expectation, claim, s, a, b, att, metric, sign):
            rows.append({"dataset": ds, **finding(c, paired, expectation, claim, s, a, b, att, metric, sign, level)})

        def steps(expectation, what, att, metric):
            for m in methods:
                sp = c.sparsities(m)
                if len(sp) < 2:
                    rows.append({"dataset": ds, "expectation": expectation, "claim": f"{m}: {what}", "sparsity": sp[0],
                                 "pair": "", "attack": att, "metric": metric,
                                 "verdict": "cannot state: one sparsity in the study (needs two)"})
                for lo, hi in zip(sp, sp[1:]):
                    add(expectation, f"{m}: {what}", hi, (m, hi), (m, lo), att, metric, -1)

        for s in sparsities:  # 1. accuracy ordering at equal sparsity, then against sparsity
            add("1 accuracy", "dense more accurate than DPF", s, ("dpf", s), dense, "", "test_acc", -1)
            add("1 accuracy", "DPF more accurate than static", s, ("dpf", s), ("static", s), "", "test_acc", +1)
        steps("1 accuracy", "accuracy lower at higher sparsity", "", "test_acc")
        for s in sparsities:  # 2. leakage ordering
            for m in ("static", "dpf"):
                add("2 leakage", f"dense leaks more than {m}", s, (m, s), dense, attack, "auc", -1)
            add("2 leakage", CLOSE, s, ("dpf", s), ("static", s), attack, "auc", 0)
        steps("3 trend", "leakage lower at higher sparsity", attack, "auc")  # 3. the trend with sparsity
    return pd.DataFrame(rows).reindex(columns=cols)


def _close_verdict(row: dict) -> str:
    """'DPF close to static' (expected sign 0): holds while no difference is resolved, reversed otherwise."""
    v = row["verdict"]
    if v.startswith("cannot"):
        return v
    return HOLDS + " (no difference resolved)" if v == UNRESOLVED else f"{REVERSED} (DPF leaks {'more' if row['difference'] > 0 else 'less'})"


def _cell(r: dict) -> str:
    if pd.isna(r.get("difference")):
        return "–"
    return f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"


def _p(v) -> str:
    return "–" if v is None or pd.isna(v) else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")


def _acc(v) -> str:
    return "–" if v is None or pd.isna(v) else f"{v:.2f}"


def _verdict_text(r: dict) -> str:
    return _close_verdict(r) if r["claim"].startswith(CLOSE) else r["verdict"]


def summary_sentence(rows: pd.DataFrame) -> str:
    """'holds at 0.5, 0.7; reversed at 0.95; not resolved at 0.8' for a claim's rows."""
    by: dict[str, list[str]] = {}
    for r in rows.to_dict("records"):
        by.setdefault(_verdict_text(r), []).append(f"{r['sparsity']:g}")
    return "; ".join(f"{v} at {', '.join(s)}" for v, s in by.items())


def tables(findings: pd.DataFrame, attack: str) -> list[tuple[str, str, pd.DataFrame]]:
    """(dataset, title, table) per expectation and dataset: what the report's Findings section lays out."""
    out = []
    for ds, d in findings.groupby("dataset", sort=False):
        for exp, g in d.groupby("expectation", sort=False):
            leak = not exp.startswith("1")
            rows = []
            for r in g.to_dict("records"):
                row = {"claim": r["claim"], "sparsity": f"{r['sparsity']:g}", "A - B": r["pair"], "verdict": _verdict_text(r),
                       "Δ [interval]": _cell(r), "p (adjusted)": _p(r.get("p_adjusted"))}
                if leak:
                    tested = r.get("attacks_tested")
                    row["attacks agree"] = "–" if tested is None or pd.isna(tested) else (
                        f"{int(r['attacks_agree'])} of {int(tested)}"
                        + (f" ({int(r['attacks_opposite'])} opposite)" if r.get("attacks_opposite") else ""))
                    row["train acc A / B"] = f"{_acc(r.get('a_train_acc'))} / {_acc(r.get('b_train_acc'))}"
                    row["train-test gap A / B"] = f"{_acc(r.get('a_gap'))} / {_acc(r.get('b_gap'))}"
                    row["fit"] = r.get("fit_note") if isinstance(r.get("fit_note"), str) else ""
                rows.append(row)
            title = {"1": "Accuracy (Δ test accuracy)", "2": f"Leakage ordering (Δ {attack} AUC)",
                     "3": f"Leakage against sparsity (Δ {attack} AUC, each sparsity minus the next lower)"}[exp[0]]
            out.append((ds, title, pd.DataFrame(rows)))
    return out


def claim_sentences(findings: pd.DataFrame) -> list[tuple[str, str]]:
    """(dataset, '**claim**: holds at 0.5, 0.7; not resolved at 0.9.') per claim, in order. Per-method claims
    ('dpf: leakage lower at higher sparsity') that cannot be stated for one reason are one sentence naming the
    methods: a study at one sparsity would otherwise list the same line for every method."""
    out = []
    for ds, d in findings.groupby("dataset", sort=False):
        order: list = []  # a sentence, or the (claim, verdict) key of merged per-method claims
        merged: dict[tuple[str, str], list[str]] = {}
        for claim, g in d.groupby("claim", sort=False):
            sentence = summary_sentence(g)
            method, sep, rest = claim.partition(": ")
            if sep and sentence.startswith("cannot state"):
                if (rest, sentence) not in merged:
                    order.append((rest, sentence))
                merged.setdefault((rest, sentence), []).append(method)
            else:
                order.append(f"**{claim}**: {sentence}.")
        out += [(ds, o if isinstance(o, str) else f"**{o[0]}** ({', '.join(merged[o])}): {o[1]}.") for o in order]
    return out


def intro(attack: str, level: int) -> str:
    return (f"The original study's three expectations, answered from this study's paired differences (A - B, model i "
            f"of each configuration trained on the same examples): **holds** / **reversed** when the {level}% paired "
            f"interval's test is significant after the report's Benjamini-Hochberg correction (the cells marked **✱** "
            f"below), otherwise **not resolved**. Leakage is the headline attack, {attack} AUC; 'attacks agree' counts "
            f"the attacks whose AUC difference is significant in the claimed direction (for 'DPF leaks as static': "
            f"no significant difference). Fit stands beside each leakage row: a configuration that fits its training "
            f"data less leaks less for that reason alone (a mean train accuracy below {FIT_TRAIN_ACC} is flagged as not "
            f"fitted).")
