"""The statistics of a study's comparisons between configurations (e.g. dense vs dpf 0.9): each attack
metric's difference A minus B with a paired interval, each configuration's own interval, the multiplicity
corrections and the per-class statistics. mia/compare.py applies them to a study's saved scores; the
derivation, and what an interval covers, is in docs/attacks.md ("The interval").

The design is crossed: every target (model i of a configuration) is scored on every pool example, and
model i of every configuration trained on the same pool subset (one keep matrix per study). So the
variation of a mean-over-targets metric has three parts: which examples were drawn (some shared by
every target of a configuration: which examples it finds easy), which seeds trained the models, and
their interaction (each model's own noise on each example). The interval estimates each part once.

API
- `bootstrap_attacks(scores, members, metrics, n_boot, seed)` once per configuration:
  {attack: {metric: Replicates}} (point [T]: each target's metric; per_target [T, n_boot]: the metric on
  resample b of the pool examples, the SAME resample b for every target, attack and configuration).
- `difference(ra, rb, level)` per pair and `interval(r, level)` for one configuration: a summary dict
  with difference (mean over targets of A - B; the value itself for `interval`), a, b, ci_low, ci_high,
  se, df, p_value (two-sided, of 0), excludes_zero, covers ("examples" with one target, "examples and
  training seeds" with several), level, n_boot, num_targets, replicates (float64 [n_boot]: the example
  resamples of the mean over targets, for plots; drop it before writing JSON).
- `compare_attacks(scores_a, scores_b, members, ...)` / `paired_bootstrap(...)` (one attack): both steps
  for one pair.
- `accuracy_difference(acc_a, acc_b, level)`: paired t interval over targets (none with one target).
- `holm(p)`, `benjamini_hochberg(p)`: adjusted p-values of a family.
- Per class: `per_class_auc`, `class_counts`, `bootstrap_classes` (Replicates per class, the same
  resamples restricted to the class), `class_heterogeneity` (permutation p-value), `auc_spread`.
- Building blocks: `weighted_metrics(scores, is_member, weights)`, `pool_metrics`, `resample_weights(n,
  n_boot, seed)` (the example resamples).

The resamples: row b draws N pool examples with replacement (int multiplicities), from one stream
default_rng([seed, _PURPOSE, 3]) consumed in order, so rows depend only on (seed, N), not on the chunk
size, the target, the attack or the configuration. They are not stratified by membership: a target's
member count is itself random under the balanced keep matrix (each example is IN for exactly half of
the models, each model's count varies), and no single draw can keep the class counts of every target at
once. Every metric of a resample uses its own counts (the TPR floor follows n_out row by row); a resample
without a member or non-member of a pool (only a small class can draw one) gives NaN and is left out.

The interval (crossed_variance, t_interval): var = shared + between, shared = mean covariance of two
distinct targets' replicates (the examples' part), between = var over targets of the point values / T
(seeds plus each model's own noise); estimate +- t quantile with Satterthwaite df, in which `between`
counts at least each target's own example noise (a spread below it is chance, and its 2 df at 3
targets must not be read as many). One target: the example-resampling variance (it covers the
examples, not the seed).

Metrics match mia/metrics.py's compute_metrics exactly (tested): `auc` (sklearn's trapezoidal AUC =
Mann-Whitney U with ties counted 1/2), `advantage` = max(TPR - FPR), `tpr_at_<level>` = the largest
TPR over the step ROC's points with FPR <= level (FPR = #FP / n_out in float64, as sklearn divides).
Non-finite scores are refused as compute_metrics refuses them (mia/metrics.check_inputs).

Cost: one sort per (attack, configuration, target), then a few O(N) passes per resample, resamples in
chunks of CHUNK_ELEMS resample x example entries (memory bounded, ~90 MB peak). 1,000 resamples of a
50,000-example pool, 12 attacks, one pair, one target: 6.8 s on 2 idle AMD EPYC cores, x66 faster
than compute_metrics per resample (benchmarks/compare_speed.py). T targets cost T times as much.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy.stats import false_discovery_control
from scipy.stats import t as student_t

from mia.metrics import FPR_LEVELS, MIN_NONMEMBERS, check_inputs

METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
KNOWN_METRICS = ("auc", "advantage", *FPR_LEVELS)
_PURPOSE = 0x9A1C  # separates these streams from every other use of the study seed (keep matrix, attacks)
CHUNK_ELEMS = 4_000_000  # resamples x examples per chunk (80 x 50,000): ~90 MB peak, any pool size
CACHE_ELEMS = 10_000_000  # resamples x examples kept in memory between calls (40 MB: 1,000 x 10,000); larger: redrawn


# -- metrics of many weighted samples at once -----------------------------------------------------------

class SortedPool(NamedTuple):
    """One score vector, each class sorted once (descending), with where every non-member falls among
    the members: all of a resample's metrics are then cumulative counts read at fixed positions.
    Members and non-members are numbered within their class, in pool order (class-local)."""
    member: np.ndarray  # bool [N]
    order_in: np.ndarray  # int64 [n_in]: members, highest score first
    order_out: np.ndarray  # int64 [n_out]: non-members, highest score first
    above: np.ndarray  # int64 [n_out]: members scoring strictly above each non-member (order_out order)
    at_or_above: np.ndarray  # int64 [n_out]: members scoring >= each non-member
    out_above: np.ndarray  # int64 [n_out]: non-members scoring strictly above each non-member
    ties: bool  # some member ties with some non-member (above != at_or_above somewhere)


def sort_pool(scores: np.ndarray, is_member: np.ndarray) -> SortedPool:
    """Sort members and non-members by score (non-finite scores refused as compute_metrics refuses them)
    and locate each non-member's score among the members and among the non-members (searchsorted)."""
    s, m = check_inputs(scores, is_member)
    if s.ndim != 1 or s.shape != m.shape:
        raise ValueError(f"scores {s.shape} and is_member {m.shape} must be matching 1-D arrays")
    if m.all() or not m.any():
        raise ValueError("metrics need both members and non-members")
    s_in, s_out = s[m], s[~m]
    order_in, order_out = np.argsort(-s_in), np.argsort(-s_out)
    asc_in, asc_out = s_in[order_in][::-1], s_out[order_out][::-1]
    s_out = s_out[order_out]
    above = len(asc_in) - np.searchsorted(asc_in, s_out, "right")
    at_or_above = len(asc_in) - np.searchsorted(asc_in, s_out, "left")
    out_above = len(asc_out) - np.searchsorted(asc_out, s_out, "right")
    return SortedPool(m, order_in, order_out, above, at_or_above, out_above, bool(np.any(above != at_or_above)))


def _max_false_positives(level: float, n_out: np.ndarray) -> np.ndarray:
    """Largest integer k with float64 k / n_out <= level, per row: the FP budget of `tpr_at_<level>`.
    Fragile numerics: sklearn compares the float quotient fps / fps[-1] with the level, and level * n_out
    may round either way (0.7 * 90 = 62.99...9 while 63 / 90 <= 0.7), so floor(level * n_out) is
    corrected by one step in each direction against the quotient itself."""
    n = n_out.astype(np.float64)
    k = np.floor(level * n)
    k = np.where((k + 1) / n <= level, k + 1, k)
    k = np.where(k / n > level, k - 1, k)
    return k.astype(np.int64)


def _cumulative(w: np.ndarray) -> np.ndarray:
    """[B, n + 1] cumulative counts with a leading 0 column: c[:, j] = weight of the first j entries.
    int32 holds any count here (< 2^31); cumsum's default would upcast to int64 (twice the memory)."""
    c = np.zeros((w.shape[0], w.shape[1] + 1), np.int32)
    np.cumsum(w, axis=1, out=c[:, 1:])
    return c


def _budget_positions(w_out: np.ndarray, order_out: np.ndarray, budgets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per FP budget k [B]: position (in decreasing score) of the (k+1)-th non-member counting weights.
    Budgets are small (1% of n_out) and weights average 1, so the first 2 k + 64 non-members almost
    always hold it; otherwise every non-member is scanned (always exists: k < total weight)."""
    kmax = max(int(k.max()) for k in budgets.values())
    cut = min(len(order_out), 2 * kmax + 64)
    c = np.cumsum(np.take(w_out, order_out[:cut], axis=1), axis=1, dtype=np.int32)
    if cut < len(order_out) and any(np.any(c[:, -1] <= k) for k in budgets.values()):
        c = np.cumsum(np.take(w_out, order_out, axis=1), axis=1, dtype=np.int32)
    return {name: np.sum(c <= k[:, None], axis=1) for name, k in budgets.items()}  # c is non-decreasing


def pool_metrics(pool: SortedPool, w_in: np.ndarray, w_out: np.ndarray,
                 metrics: Sequence[str] = METRICS) -> dict[str, np.ndarray]:
    """Metrics of B weighted samples of one sorted pool: w_in [B, n_in] and w_out [B, n_out] are
    non-negative integer multiplicities of the members and non-members (class-local numbering; a
    bootstrap resample, or all ones for the sample itself). Each row gives what compute_metrics gives
    on the sample with every example repeated by its weight. With CI[j] = weight of the j
    highest-scoring members and CO[j] the same for non-members:
      auc = sum_j w_j (CI[above_j] + CI[at_or_above_j]) / (2 n_in n_out) over non-members j: each beats
            the members above it and half of those tied with it (Mann-Whitney U with midranks, which
            is sklearn's trapezoidal area under the step ROC);
      tpr_at_<level>: with k the FP budget, the ROC points with FPR <= level are those above the
            (k+1)-th non-member (by weight), so TPR = CI[above of that non-member] / n_in;
      advantage = max(TPR - FPR): the best point lies just above some non-member j (adding members only
            raises TPR): max_j CI[above_j] / n_in - CO[out_above_j] / n_out.
    TPR and FPR are the same integer quotients sklearn forms, so tpr_at_* and advantage are equal to
    compute_metrics' bit for bit; the AUC is exact, sklearn's within rounding (1e-15). Sorting is done
    once per pool (rank-based AUC per resample would sort B times); each call is a few O(B N) passes.
    Returns float64 [B] per metric."""
    bad = [k for k in metrics if k not in ("auc", "advantage") and k not in FPR_LEVELS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; known: {', '.join(KNOWN_METRICS)}")
    ci = _cumulative(np.take(w_in, pool.order_in, axis=1))
    n_in, n_out = ci[:, -1].astype(np.int64), np.sum(w_out, axis=1, dtype=np.int64)
    if np.any(n_in == 0) or np.any(n_out == 0):
        raise ValueError("metrics need both members and non-members in every sample")
    out = {}
    budgets = {k: _max_false_positives(FPR_LEVELS[k], n_out) for k in metrics if k in FPR_LEVELS}
    if budgets:
        for name, j in _budget_positions(w_out, pool.order_out, budgets).items():
            out[name] = np.take_along_axis(ci, pool.above[j][:, None], axis=1)[:, 0] / n_in
    if "auc" in metrics or "advantage" in metrics:
        w_sorted = np.take(w_out, pool.order_out, axis=1)
        ci_above = np.take(ci, pool.above, axis=1)  # np.take: several times faster than ci[:, idx]
    if "auc" in metrics:
        beaten = ci_above + np.take(ci, pool.at_or_above, axis=1) if pool.ties else 2 * ci_above
        # per-term products fit int32; the sum (up to 2 n_in n_out, 5e9 at N = 100,000) needs int64
        out["auc"] = np.sum(w_sorted * beaten, axis=1, dtype=np.int64) / (2.0 * n_in * n_out)
    if "advantage" in metrics:
        co_above = np.take(_cumulative(w_sorted), pool.out_above, axis=1)
        # the top non-member's term is TPR - 0 >= 0, so the (1, 1) point's 0 needs no term of its own
        out["advantage"] = np.max(ci_above / n_in[:, None] - co_above / n_out[:, None], axis=1)
    return {k: out[k] for k in metrics}


def weighted_metrics(scores: np.ndarray, is_member: np.ndarray, weights: np.ndarray | None = None,
                     metrics: Sequence[str] = METRICS) -> dict:
    """pool_metrics for one score vector: float64 [B] per metric for full-pool weights [B, N]; weights
    None means the sample itself (returns floats, equal to compute_metrics' values)."""
    pool = sort_pool(scores, is_member)
    m = pool.member
    if weights is None:
        res = pool_metrics(pool, np.ones((1, m.sum()), np.int32), np.ones((1, (~m).sum()), np.int32), metrics)
        return {k: float(v[0]) for k, v in res.items()}
    w = np.asarray(weights)
    return pool_metrics(pool, w[:, m], w[:, ~m], metrics)


# -- resamples --------------------------------------------------------------------------------------------

def _rng(seed: int, *keys: int) -> np.random.Generator:
    """A stream of its own per purpose (keys), never default_rng(seed), the keep matrix's stream."""
    return np.random.default_rng([seed, _PURPOSE, *keys])


def _multiplicities(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """int32 [b, n]: how often each of n items is picked in n draws with replacement, b times. One
    bincount per row keeps its counts in cache (one bincount over all rows is ~5x slower)."""
    draws = rng.integers(0, n, (b, n), dtype=np.int32)
    out = np.empty((b, n), np.int32)
    for r in range(b):
        out[r] = np.bincount(draws[r], minlength=n)
    return out


def resample_weights(n: int, n_boot: int, seed: int = 0, chunk_elems: int = CHUNK_ELEMS) -> Iterator[np.ndarray]:
    """The example resamples of the crossed bootstrap: int32 [B, n] multiplicities (n draws with
    replacement among the n pool examples), n_boot rows in all, in chunks of ~chunk_elems entries.
    They depend on (seed, n) only: every target and every configuration of a study gets the same rows,
    which crosses the targets with the examples and pairs the configurations. One stream consumed in
    order, so the rows do not depend on chunk_elems."""
    if n * n_boot <= CACHE_ELEMS:  # a study draws the same rows for every target, attack and configuration
        yield from _cached_weights(n, n_boot, seed, chunk_elems)
    else:
        yield from _draw_weights(n, n_boot, seed, chunk_elems)


def _draw_weights(n: int, n_boot: int, seed: int, chunk_elems: int) -> Iterator[np.ndarray]:
    rng = _rng(seed, 3)
    step = max(1, chunk_elems // n)
    for start in range(0, n_boot, step):
        yield _multiplicities(rng, n, min(step, n_boot - start))


@functools.lru_cache(maxsize=2)
def _cached_weights(n: int, n_boot: int, seed: int, chunk_elems: int) -> tuple[np.ndarray, ...]:
    """_draw_weights' chunks of a small pool, drawn once and kept read-only (redrawing them for each of a
    study's targets x attacks x configurations cost 2.4 s of mia/compare.py on the CIFAR-10 study)."""
    chunks = tuple(_draw_weights(n, n_boot, seed, chunk_elems))
    for c in chunks:
        c.flags.writeable = False
    return chunks


def resampled_metrics(pool: SortedPool, w: np.ndarray, metrics: Sequence[str] = METRICS) -> dict[str, np.ndarray]:
    """pool_metrics for full-pool weights w [B, N] of this pool's examples; NaN on a row that drew no
    member or no non-member of this pool (about e^-n for a class of n: only small classes ever do)."""
    m = pool.member
    w_in, w_out = w[:, m], w[:, ~m]
    ok = (w_in.sum(axis=1) > 0) & (w_out.sum(axis=1) > 0)
    if ok.all():
        return pool_metrics(pool, w_in, w_out, metrics)
    out = {k: np.full(len(w), np.nan) for k in metrics}
    if ok.any():
        for k, v in pool_metrics(pool, w_in[ok], w_out[ok], metrics).items():
            out[k][ok] = v
    return out


# -- one configuration's replicates ----------------------------------------------------------------------

def _as_targets(x) -> list[np.ndarray]:
    """A list of per-target arrays; a bare 1-D array is one target."""
    return [np.asarray(x)] if isinstance(x, np.ndarray) and x.ndim == 1 else [np.asarray(a) for a in x]


def _check(metrics: Sequence[str], n_boot: int, level: float, members: list[np.ndarray]) -> None:
    """Refuse, before any work, what no resample could answer: a target without both classes, a TPR
    level that compute_metrics would not report for its number of non-members, targets over different
    pools (the design is crossed: one pool), fewer than 2 resamples (no variance), a bad level."""
    if n_boot < 2 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 2 and 0 < level < 1 (got {n_boot}, {level})")
    if len({len(m) for m in members}) > 1:
        raise ValueError(f"targets scored on pools of different sizes {sorted({len(m) for m in members})}: "
                         "the targets of a configuration share one pool")
    for t, m in enumerate(members):
        n_out = int((~m).sum())
        if m.sum() == 0 or n_out == 0:
            raise ValueError(f"target {t}: needs both members and non-members")
        short = [k for k in metrics if n_out < MIN_NONMEMBERS.get(k, 0)]
        if short:
            raise ValueError(f"target {t}: {short} need at least {MIN_NONMEMBERS[short[0]]} non-members (has {n_out})")


class Replicates(NamedTuple):
    """One configuration's metric: `point` [T] on each target's full sample, `per_target` [T, n_boot]
    on the crossed example resamples (column b: resample b of the pool, the same for every target and,
    with the same seed and pool, for every configuration: that pairs them; NaN where a resample lacks a
    class of a small pool)."""
    point: np.ndarray
    per_target: np.ndarray

    def select(self, rows: Sequence[int]) -> "Replicates":
        """The replicates of some targets only (rows of this configuration's target list)."""
        rows = list(rows)
        return Replicates(self.point[rows], self.per_target[rows])


def bootstrap_attacks(scores: Mapping[str, Sequence[np.ndarray]], members: Sequence[np.ndarray],
                      metrics: Sequence[str] = METRICS, n_boot: int = 1000, seed: int = 0,
                      chunk_elems: int = CHUNK_ELEMS) -> dict[str, dict[str, Replicates]]:
    """Every attack's metrics on every crossed example resample, for every target of ONE configuration:
    {attack: {metric: Replicates}}. scores[attack] and members hold one array [N] per target (one
    pool). Each pool is sorted once; the resamples are the same for every attack and target (redrawn
    from their stream per target, so memory stays one chunk). Cost is linear in the configurations: a
    study computes each once and takes any number of differences."""
    members = [np.asarray(m, bool) for m in _as_targets(members)]
    sc = {k: _as_targets(v) for k, v in scores.items()}
    _check(metrics, n_boot, 0.5, members)
    for k, v in sc.items():
        if len(v) != len(members):
            raise ValueError(f"{k}: {len(v)} score arrays for {len(members)} targets")
    n_t = len(members)
    point = {k: {m: np.empty(n_t) for m in metrics} for k in sc}
    boot = {k: {m: np.empty((n_t, n_boot)) for m in metrics} for k in sc}
    for t, mem in enumerate(members):
        pools = {k: sort_pool(v[t], mem) for k, v in sc.items()}
        ones = np.ones((1, mem.sum()), np.int32), np.ones((1, (~mem).sum()), np.int32)
        for k, p in pools.items():
            for m, v in pool_metrics(p, *ones, metrics).items():
                point[k][m][t] = v[0]
        start = 0
        for w in resample_weights(len(mem), n_boot, seed, chunk_elems):  # the same rows for every target
            stop = start + len(w)
            for k, p in pools.items():
                for m, v in resampled_metrics(p, w, metrics).items():
                    boot[k][m][t, start:stop] = v
            start = stop
    return {k: {m: Replicates(point[k][m], boot[k][m]) for m in metrics} for k in sc}


# -- the interval ------------------------------------------------------------------------------------------

COVERS = {False: "examples", True: "examples and training seeds"}  # keyed by "several targets"


def crossed_variance(point: np.ndarray, per_target: np.ndarray, floor_df: bool = True) -> tuple[float, float]:
    """Variance of the mean over targets of a statistic in the crossed design (every target scored on
    the same pool examples) and its Satterthwaite degrees of freedom (docs/attacks.md, "The interval"):
      shared  = mean covariance, over pairs of distinct targets, of their replicates under the shared
                example resamples: the example variation every target sees alike (which examples a
                configuration finds easy), which averaging over targets does not remove; clipped at 0
                (a negative estimate is noise: left in, it can cancel `between` and send the df, hence
                the t quantile, to absurd values);
      between = sample variance of the T point values / T: training seeds, plus each target's own
                example noise, which averaging does reduce (T - 1 degrees of freedom).
    var = shared + between estimates sigma_ex^2 / N + sigma_seed^2 / T + sigma_noise^2 / (N T), each
    part once (the pigeonhole bootstrap's replicate variance counts the last three times, Owen 2007;
    the nested one twice). A replicate variance rests on B resamples: B - 1 df for `shared`.
    The df: Satterthwaite's formula wants each part's expectation. For `shared` the estimate will do
    (B - 1 df); for `between` it will not: at 3 targets it rests on 2 df, falls below 1% of its
    expectation 1% of the time, and the plugged-in df then jumps to ~B - 1 while the statistic's
    spread is still set by those 2 df (far too many tiny p-values under a null: docs/attacks.md, "The
    interval"). Its expectation has a floor that IS well
    measured: the spread of the T point values contains each target's own example noise (sigma_noise^2
    / N), which is the replicate variance of a target minus the shared part (`own`). So the df use
    max(between, own / T) for E[between]: the plug-in df when the targets' spread is at least
    their own noise, T - 1 when it is by chance below it. The variance itself is not floored (that
    biased it upward: the simulated nulls over-covered, 0.974-0.9995). floor_df=False gives the plug-in
    df (benchmarks/interval_tail.py compares the two). One target: its
    example-resampling variance with B - 1 df (covers examples only). Resamples with a NaN (a small
    class drew no member) are left out; (nan, nan) without 2 resamples."""
    point, d = np.asarray(point, np.float64), np.asarray(per_target, np.float64)
    d = d[:, np.isfinite(d).all(axis=0)]
    n_t, b = d.shape
    if b < 2:
        return float("nan"), float("nan")
    dev = d - d.mean(axis=1, keepdims=True)
    cov = dev @ dev.T / (b - 1)
    if n_t == 1:
        return float(cov[0, 0]), float(b - 1)
    shared = max(0.0, float(cov.sum() - np.trace(cov)) / (n_t * (n_t - 1)))
    between = float(np.var(point, ddof=1)) / n_t
    own = max(0.0, float(np.trace(cov)) / n_t - shared)  # each target's own example noise, mean over targets
    var, e_between = shared + between, max(between, own / n_t) if floor_df else between
    spread = e_between ** 2 / (n_t - 1) + shared ** 2 / (b - 1)
    return var, (float(b - 1) if spread == 0 else (shared + e_between) ** 2 / spread)


def t_interval(estimate: float, var: float, df: float, level: float) -> dict:
    """estimate +- t_{df, (1 + level) / 2} sqrt(var) and the two-sided p-value of 0 (the interval
    excludes 0 exactly when p < 1 - level). A zero variance gives the point itself, p 1 at 0, else 0."""
    if not np.isfinite(var):
        return {"ci_low": None, "ci_high": None, "se": None, "df": None, "p_value": None, "excludes_zero": None}
    se = float(np.sqrt(var))
    q = float(student_t.ppf((1 + level) / 2, df))
    if se > 0:
        p = float(2 * student_t.sf(abs(estimate) / se, df))
    else:
        p = 1.0 if estimate == 0 else 0.0
    low, high = estimate - q * se, estimate + q * se
    return {"ci_low": float(low), "ci_high": float(high), "se": se, "df": float(df), "p_value": p,
            "excludes_zero": bool(low > 0 or high < 0)}


def summarize(a: np.ndarray, b: np.ndarray | None, per_target: np.ndarray | None, level: float) -> dict:
    """Point estimate (mean over targets of A - B, and of each; of A alone when b is None) with its
    crossed t interval from the per-target replicates of A - B (none without replicates)."""
    a = np.asarray(a, np.float64)
    point = a - (0.0 if b is None else np.asarray(b, np.float64))
    diff = float(np.mean(point))
    out = {"difference": diff, "a": float(np.mean(a)), "b": None if b is None else float(np.mean(b)), "level": level,
           "num_targets": len(a), "covers": COVERS[len(a) > 1], **t_interval(diff, float("nan"), 0, level)}
    if per_target is not None:
        out.update(t_interval(diff, *crossed_variance(point, per_target), level),
                   n_boot=per_target.shape[1], replicates=per_target.mean(axis=0))
    return out


def interval(r: Replicates, level: float = 0.95) -> dict:
    """One configuration's metric (mean over targets) with its crossed interval; `difference` holds
    the value itself (A minus nothing)."""
    return summarize(r.point, None, r.per_target, level)


def difference(ra: Replicates, rb: Replicates, level: float = 0.95) -> dict:
    """A - B for two configurations bootstrapped with the same seed and pool on the same targets: per
    target, the difference of the same resamples (paired), then the crossed interval."""
    if ra.per_target.shape != rb.per_target.shape:
        raise ValueError(f"A and B were bootstrapped differently: {ra.per_target.shape} vs {rb.per_target.shape}")
    return summarize(ra.point, rb.point, ra.per_target - rb.per_target, level)


def compare_attacks(scores_a: Mapping[str, Sequence[np.ndarray]], scores_b: Mapping[str, Sequence[np.ndarray]],
                    members: Sequence[np.ndarray], metrics: Sequence[str] = METRICS, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95, chunk_elems: int = CHUNK_ELEMS) -> dict[str, dict[str, dict]]:
    """Paired crossed interval of A - B for every attack and metric (module docstring):
    {attack: {metric: summary}}. scores_*[attack] and members hold one array [N] per target, in the
    same target order; A and B must share the targets' pool and membership (paired)."""
    if set(scores_a) != set(scores_b):
        raise ValueError(f"attacks differ between A and B: {sorted(set(scores_a) ^ set(scores_b))}")
    _check(metrics, n_boot, level, [np.asarray(m, bool) for m in _as_targets(members)])
    ra, rb = (bootstrap_attacks(s, members, metrics, n_boot, seed, chunk_elems) for s in (scores_a, scores_b))
    return {k: {m: difference(ra[k][m], rb[k][m], level) for m in metrics} for k in ra}


def paired_bootstrap(scores_a, scores_b, members, metrics: Sequence[str] = METRICS, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95, chunk_elems: int = CHUNK_ELEMS) -> dict[str, dict]:
    """compare_attacks for one attack: {metric: summary}. scores_a, scores_b, members: lists of
    per-target arrays [N] (or single arrays for one target)."""
    return compare_attacks({"": scores_a}, {"": scores_b}, members, metrics, n_boot, seed, level, chunk_elems)[""]


def accuracy_difference(acc_a: Sequence[float], acc_b: Sequence[float], level: float = 0.95) -> dict:
    """Test accuracy of A minus B, mean over targets (model i of A vs model i of B), with a paired t
    interval over the targets (T - 1 df: exact for normal per-target differences, valid from 2 targets).
    It covers training seeds on this test set; the test images are not resampled (only each model's
    accuracy is saved). None with one target: one pair of models cannot separate the method from the
    seed, and an interval over test images alone would call seed noise a method effect."""
    a, b = np.asarray(acc_a, np.float64), np.asarray(acc_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need one accuracy per target for A and B (got {a.shape}, {b.shape})")
    out = summarize(a, b, None, level)
    out["covers"] = "training seeds (this test set)"
    if len(a) > 1:
        out.update(t_interval(out["difference"], float(np.var(a - b, ddof=1)) / len(a), len(a) - 1, level))
    return out


# -- multiplicity ------------------------------------------------------------------------------------------

def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error at the level you compare them with, under
    any dependence); NaN entries are not in the family and stay NaN."""
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate; valid under positive dependence,
    as the cells of one study are: they share examples and models); NaN entries stay NaN."""
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


# -- per-class leakage -------------------------------------------------------------------------------------

HETEROGENEITY_PERMUTATIONS = 200  # permutations of the class labels: p-values in steps of 1/201


def per_class_auc(scores: np.ndarray, is_member: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """AUC of the attack within each class: float64 [num_classes], NaN where a class lacks members or
    non-members. Shows whether leakage concentrates in some classes (pruning can hurt some more)."""
    s, m, y = np.asarray(scores, np.float64), np.asarray(is_member, bool), np.asarray(labels)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = y == c
        if m[rows].any() and not m[rows].all():
            out[c] = weighted_metrics(s[rows], m[rows], metrics=("auc",))["auc"]
    return out


def class_counts(is_member: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [2, num_classes]: members and non-members of each class."""
    m, y = np.asarray(is_member, bool), np.asarray(labels)
    return np.stack([np.bincount(y[m], minlength=num_classes), np.bincount(y[~m], minlength=num_classes)])


def bootstrap_classes(scores: Sequence[np.ndarray], members: Sequence[np.ndarray], labels: np.ndarray,
                      classes: Sequence[int], n_boot: int = 1000, seed: int = 0,
                      chunk_elems: int = CHUNK_ELEMS) -> dict[int, Replicates]:
    """One attack's AUC within each of `classes` (each with members and non-members in every target),
    per target, on the crossed example resamples of bootstrap_attacks restricted to the class: the
    per-class intervals are then the same crossed intervals (`interval`)."""
    y = np.asarray(labels)
    rows = {c: y == c for c in classes}
    point = {c: np.empty(len(members)) for c in classes}
    boot = {c: np.empty((len(members), n_boot)) for c in classes}
    for t, (s, m) in enumerate(zip(scores, members)):
        s, m = np.asarray(s, np.float64), np.asarray(m, bool)
        pools = {c: sort_pool(s[r], m[r]) for c, r in rows.items()}
        for c, p in pools.items():
            point[c][t] = pool_metrics(p, np.ones((1, p.member.sum()), np.int32),
                                       np.ones((1, (~p.member).sum()), np.int32), ("auc",))["auc"][0]
        start = 0
        for w in resample_weights(len(m), n_boot, seed, chunk_elems):
            stop = start + len(w)
            for c, p in pools.items():
                boot[c][t, start:stop] = resampled_metrics(p, w[:, rows[c]], ("auc",))["auc"]
            start = stop
    return {c: Replicates(point[c], boot[c]) for c in classes}


def _permuted_class_aucs(scores: np.ndarray, is_member: np.ndarray, cls: np.ndarray, k: int,
                         perms: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """AUC within each of k classes (cls in 0..k-1, every class with members and non-members) after each
    relabelling (p_in, p_out) of the members' and non-members' classes: float64 [len(perms), k].
    Non-members are sorted by score once; a member's within-class count of non-members below it (ties
    half) is then a search for key class * (n_out + 1) + position among the sorted keys of the relabelled
    non-members: O(N log N) per relabelling whatever the number of classes."""
    s, m = np.asarray(scores, np.float64), np.asarray(is_member, bool)
    order = np.argsort(s[~m], kind="stable")
    s_out, c_out, c_in = s[~m][order], cls[~m][order], cls[m]
    lo, hi = np.searchsorted(s_out, s[m], "left"), np.searchsorted(s_out, s[m], "right")
    span = len(s_out) + 1
    n_in, n_out = np.bincount(c_in, minlength=k), np.bincount(c_out, minlength=k)
    out = np.empty((len(perms), k))
    for i, (p_in, p_out) in enumerate(perms):
        ci, co = c_in[p_in], c_out[p_out]
        keys = np.sort(co * span + np.arange(len(co)))
        start = np.searchsorted(keys, np.arange(k) * span)[ci]
        below = np.searchsorted(keys, ci * span + lo) - start
        at_or_below = np.searchsorted(keys, ci * span + hi) - start
        out[i] = np.bincount(ci, weights=below + at_or_below, minlength=k) / (2.0 * n_in * n_out)
    return out


def class_heterogeneity(scores: Sequence[np.ndarray], members: Sequence[np.ndarray], labels: np.ndarray,
                        classes: Sequence[int], n_perm: int = HETEROGENEITY_PERMUTATIONS, seed: int = 0) -> float:
    """Permutation p-value of "the attack leaks the same in every class" over `classes` (at least 2,
    each with members and non-members in every target). Statistic: sum_c w_c (A_c - A_w)^2, A_c the
    class's AUC (mean over targets), w_c = n_in n_out / (n_in + n_out + 1) (the inverse of the AUC's
    null variance up to a constant: small classes weigh less), A_w their w-weighted mean. Null
    distribution: the class labels permuted among the members and, separately, among the non-members
    of each target (the membership and every class's counts kept), n_perm times; exact for "the score
    does not depend on the class given membership". p = (1 + #{Q_perm >= Q}) / (1 + n_perm)."""
    y = np.asarray(labels)
    keep = np.isin(y, classes)
    remap = np.searchsorted(np.sort(classes), y[keep])
    k, rng = len(classes), _rng(seed, 4)
    aucs, weights = [], []
    for s, m in zip(scores, members):
        s, m = np.asarray(s, np.float64)[keep], np.asarray(m, bool)[keep]
        n_in, n_out = int(m.sum()), int((~m).sum())
        perms = [(np.arange(n_in), np.arange(n_out))] + [(rng.permutation(n_in), rng.permutation(n_out))
                                                         for _ in range(n_perm)]
        aucs.append(_permuted_class_aucs(s, m, remap, k, perms))
        cnt = class_counts(m, remap, k).astype(np.float64)
        weights.append(cnt[0] * cnt[1] / (cnt.sum(axis=0) + 1))
    a, w = np.mean(aucs, axis=0), np.mean(weights, axis=0)  # [1 + n_perm, k], [k]
    q = np.sum(w * (a - (a @ w / w.sum())[:, None]) ** 2, axis=1)
    return float((1 + np.sum(q[1:] >= q[0] * (1 - 1e-12))) / (1 + n_perm))


def auc_spread(per_class: np.ndarray) -> dict:
    """min, max, std (population, ddof 0) and range (max - min) over the classes with a defined AUC,
    and how many there are; NaN everywhere when none."""
    v = np.asarray(per_class, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"min": np.nan, "max": np.nan, "std": np.nan, "range": np.nan, "num_classes": 0}
    return {"min": float(v.min()), "max": float(v.max()), "std": float(v.std()), "range": float(v.max() - v.min()),
            "num_classes": int(len(v))}
