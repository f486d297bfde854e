"""The statistics of paired comparisons between configurations of the study (e.g. dense vs dpf 0.9):
the difference of each attack metric, A minus B, with a paired bootstrap confidence interval, and
each configuration's own interval. mia/compare.py applies them to a study's saved scores.

Why paired: model i of every configuration trained on the same pool subset (one keep matrix per study,
README "paired comparisons"), so for a target index both configurations' attack scores are over the
same pool examples with the same membership labels. Resampling the SAME examples for A and B cancels
the variation the two share (which examples are easy to attack) and gives far narrower intervals
than two independent intervals would.

API
- `paired_bootstrap(scores_a, scores_b, members, metrics=METRICS, n_boot=1000, seed=0, level=0.95)`
  -> {metric: summary}. scores_a, scores_b, members: one array [N] per target (lists of equal length;
  a bare array means one target). A summary is a dict:
  difference (mean over targets of A - B on the full data), ci_low, ci_high (percentile interval at
  `level`), excludes_zero, a, b (mean over targets of each configuration's metric), level, n_boot,
  num_targets, replicates (float64 [n_boot], the bootstrap differences, for plots or other intervals).
  Results are plain floats/bools except `replicates`; drop it before writing JSON.
- `compare_attacks(scores_a, scores_b, members, ...)`: the same for several attacks at once,
  {attack: [per-target scores]} -> {attack: {metric: summary}}. Every attack is evaluated on the same
  resamples (drawn once, shared), which is also what makes 12 attacks cost little more than one.
- For a study with many pairs: `bootstrap_attacks(scores, members, ...)` once per configuration
  ({attack: {metric: Replicates}}), then `difference(ra, rb)` per pair and `interval(r)` for one
  configuration's own interval. compare_attacks is exactly these two steps.
- `accuracy_difference(acc_a, acc_b, ...)`: test accuracy is not a statistic over pool examples: mean
  over targets of A - B with a bootstrap-over-targets interval (None with a single target).
- `per_class_auc(scores, is_member, labels, num_classes)` -> [C] (NaN where a class lacks members or
  non-members) and `auc_spread(per_class)` -> min, max, std, range over the classes.
- Building blocks: `weighted_metrics(scores, is_member, weights)` (metrics of many resamples at once)
  and `resample_weights(is_member, n_boot, seed, target)` (the resamples paired_bootstrap uses).

The bootstrap (two levels)
- Examples, stratified: a resample of one target draws n_in members with replacement among its
  members and n_out non-members among its non-members, so every resample keeps both classes and the
  same class counts (every metric stays defined; the TPR floor 1/n_out is unchanged). The same
  draws are applied to A's and B's scores; the metric difference is computed on each resample.
- Targets (leave-one-out, T > 1): replicate b draws T targets with replacement and averages, over the
  drawn targets, the difference on an example resample of each. One target is the special case where
  the target draw is trivial. For speed every target gets n_boot example resamples (copies); slot j of
  replicate b takes copy (b + j) mod n_boot of its target, so a target drawn twice in one replicate
  gets two independent example resamples (as a two-stage bootstrap requires) as long as T <= n_boot.
  Copies are reused across replicates: this correlates replicates a little (Monte Carlo noise), it
  does not bias them.
- Interval: percentile (np.quantile, linear interpolation) of the n_boot replicate differences.
- Deterministic given `seed` and independent of the chunk size: each (target, class) draws from its
  own stream default_rng([seed, _PURPOSE, 1, target, class]); targets from [seed, _PURPOSE, 0].
  The same seed for another pair of configurations reuses the same resamples (common random numbers).

Metrics match mia/metrics.py's compute_metrics exactly (tested): `auc` (sklearn's trapezoidal AUC =
Mann-Whitney U with ties counted 1/2), `advantage` = max(TPR - FPR), `tpr_at_<level>` = the largest
TPR over the step ROC's points with FPR <= level (FPR = #FP / n_out in float64, as sklearn divides).
Non-finite scores are mapped as compute_metrics maps them.

Cost: one sort per (attack, configuration, target), then a few O(N) passes per resample, resamples in
chunks of CHUNK_ELEMS resample x example entries (memory bounded, ~90 MB peak). 1,000 resamples of a
50,000-example pool, 12 attacks, one pair, one target: 12.6 s on 2 loaded AMD EPYC cores, x73 faster
than compute_metrics per resample (benchmarks/compare_speed.py). T targets cost T times as much.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from mia.metrics import FPR_LEVELS, MIN_NONMEMBERS, _finite

METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
KNOWN_METRICS = ("auc", "advantage", *FPR_LEVELS)
_PURPOSE = 0x9A1C  # separates these streams from every other use of the study seed (keep matrix, attacks)
CHUNK_ELEMS = 4_000_000  # resamples x examples per chunk (80 x 50,000): ~90 MB peak, any pool size


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
    """Sort members and non-members by score (non-finite scores mapped as compute_metrics maps them)
    and locate each non-member's score among the members and among the non-members (searchsorted)."""
    s = _finite(np.asarray(scores, np.float64))
    m = np.asarray(is_member, bool)
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


def _class_resamples(is_member: np.ndarray, n_boot: int, seed: int, target: int,
                     chunk_elems: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified resamples of one target as (w_in [B, n_in], w_out [B, n_out]) chunks, B ~ chunk_elems / N.
    Each class has its own stream, consumed in order, so the rows do not depend on chunk_elems."""
    m = np.asarray(is_member, bool)
    sizes, rngs = (int(m.sum()), int((~m).sum())), (_rng(seed, 1, target, 1), _rng(seed, 1, target, 0))
    step = max(1, chunk_elems // len(m))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        yield _multiplicities(rngs[0], sizes[0], b), _multiplicities(rngs[1], sizes[1], b)


def resample_weights(is_member: np.ndarray, n_boot: int, seed: int = 0, target: int = 0,
                     chunk_elems: int = CHUNK_ELEMS) -> Iterator[np.ndarray]:
    """The stratified example resamples paired_bootstrap uses for target number `target`, as full-pool
    multiplicities: int32 [B, N] chunks, n_boot rows in all. Row b draws n_in members with replacement
    among the members and n_out non-members among the non-members: both classes and their counts kept."""
    m = np.asarray(is_member, bool)
    for w_in, w_out in _class_resamples(m, n_boot, seed, target, chunk_elems):
        w = np.empty((len(w_in), len(m)), np.int32)
        w[:, m], w[:, ~m] = w_in, w_out
        yield w


# -- the paired comparison --------------------------------------------------------------------------------

def _as_targets(x) -> list[np.ndarray]:
    """A list of per-target arrays; a bare 1-D array is one target."""
    return [np.asarray(x)] if isinstance(x, np.ndarray) and x.ndim == 1 else [np.asarray(a) for a in x]


def _check(metrics: Sequence[str], n_boot: int, level: float, members: list[np.ndarray]) -> None:
    """Refuse, before any work, what no resample could answer: a target without both classes, a TPR
    level that compute_metrics would not report for its number of non-members, a bad n_boot or level."""
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1 (got {n_boot}, {level})")
    for t, m in enumerate(members):
        n_out = int((~m).sum())
        if m.sum() == 0 or n_out == 0:
            raise ValueError(f"target {t}: needs both members and non-members")
        short = [k for k in metrics if n_out < MIN_NONMEMBERS.get(k, 0)]
        if short:
            raise ValueError(f"target {t}: {short} need at least {MIN_NONMEMBERS[short[0]]} non-members (has {n_out})")


def resample_targets(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Upper level of the bootstrap: d [T, K] holds K resampled values per target (K = 1: a fixed value).
    Replicate b draws T targets with replacement and averages d[t_bj, (b + j) mod K] over its slots j:
    distinct slots use distinct copies, i.e. independent lower-level resamples. float64 [n_boot]."""
    t, k = d.shape
    draws = rng.integers(0, t, (n_boot, t))
    copies = (np.arange(n_boot)[:, None] + np.arange(t)[None, :]) % k
    return d[draws, copies].mean(axis=1)


class Replicates(NamedTuple):
    """One configuration's metric under the bootstrap: `point` [T] on each target's full sample,
    `per_target` [T, n_boot] on each target's example resamples (row t uses target t's resamples,
    which depend only on the seed, t and the membership: two configurations evaluated with the same
    seed and targets share them, which is what pairs them)."""
    point: np.ndarray
    per_target: np.ndarray

    def select(self, rows: Sequence[int]) -> "Replicates":
        """The replicates of some targets only (rows of this configuration's target list)."""
        rows = list(rows)
        return Replicates(self.point[rows], self.per_target[rows])


def bootstrap_attacks(scores: Mapping[str, Sequence[np.ndarray]], members: Sequence[np.ndarray],
                      metrics: Sequence[str] = METRICS, n_boot: int = 1000, seed: int = 0,
                      chunk_elems: int = CHUNK_ELEMS, target_ids: Sequence[int] | None = None) -> dict[str, dict[str, Replicates]]:
    """Every attack's metrics on every example resample of every target, for ONE configuration:
    {attack: {metric: Replicates}}. scores[attack] and members hold one array [N_t] per target.
    Each pool is sorted once; the resamples are drawn once and shared by all attacks. Cost is linear
    in the configurations: a study computes each once and takes any number of differences.
    target_ids (default 0..T-1) key each target's resample streams: with the model indices, two
    configurations evaluated on different target sets share the resamples of the targets they share
    (Replicates.select picks those rows)."""
    members = [np.asarray(m, bool) for m in _as_targets(members)]
    ids = list(range(len(members))) if target_ids is None else [int(i) for i in target_ids]
    if len(ids) != len(members):
        raise ValueError(f"{len(ids)} target ids for {len(members)} targets")
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
        for w_in, w_out in _class_resamples(mem, n_boot, seed, ids[t], chunk_elems):  # drawn once, shared by all attacks
            stop = start + len(w_in)
            for k, p in pools.items():
                for m, v in pool_metrics(p, w_in, w_out, metrics).items():
                    boot[k][m][t, start:stop] = v
            start = stop
    return {k: {m: Replicates(point[k][m], boot[k][m]) for m in metrics} for k in sc}


def summarize(a: np.ndarray, b: np.ndarray | None, replicates: np.ndarray | None, level: float) -> dict:
    """Point estimate (mean over targets of A - B, and of each; of A alone when b is None),
    percentile interval of the replicates (None without replicates), whether it excludes 0."""
    b_ = np.zeros_like(np.asarray(a, np.float64)) if b is None else np.asarray(b)
    diff = float(np.mean(np.asarray(a) - b_))
    out = {"difference": diff, "a": float(np.mean(a)), "b": None if b is None else float(np.mean(b)), "level": level,
           "num_targets": len(a), "ci_low": None, "ci_high": None, "excludes_zero": None}
    if replicates is not None:
        low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
        out.update(ci_low=float(low), ci_high=float(high), excludes_zero=bool(low > 0 or high < 0),
                   n_boot=len(replicates), replicates=replicates)
    return out


def interval(r: Replicates, seed: int = 0, level: float = 0.95) -> dict:
    """One configuration's metric with its two-level percentile interval (mean over targets);
    `difference` holds the value itself (A minus nothing)."""
    reps = resample_targets(r.per_target, r.per_target.shape[1], _rng(seed, 0))
    return summarize(r.point, None, reps, level)


def difference(ra: Replicates, rb: Replicates, seed: int = 0, level: float = 0.95) -> dict:
    """A - B for two configurations bootstrapped with the same seed, targets and membership: the
    replicate differences of the same resamples, averaged over the same target draws (the target
    level draws from the same stream for every attack, metric and pair)."""
    if ra.per_target.shape != rb.per_target.shape:
        raise ValueError(f"A and B were bootstrapped differently: {ra.per_target.shape} vs {rb.per_target.shape}")
    d = ra.per_target - rb.per_target
    return summarize(ra.point, rb.point, resample_targets(d, d.shape[1], _rng(seed, 0)), level)


def compare_attacks(scores_a: Mapping[str, Sequence[np.ndarray]], scores_b: Mapping[str, Sequence[np.ndarray]],
                    members: Sequence[np.ndarray], metrics: Sequence[str] = METRICS, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95, chunk_elems: int = CHUNK_ELEMS) -> dict[str, dict[str, dict]]:
    """Paired two-level bootstrap of A - B for every attack and metric (module docstring):
    {attack: {metric: summary}}. scores_*[attack] and members hold one array [N_t] per target, in the
    same target order; A and B must share the targets' pool and membership (paired)."""
    if set(scores_a) != set(scores_b):
        raise ValueError(f"attacks differ between A and B: {sorted(set(scores_a) ^ set(scores_b))}")
    _check(metrics, n_boot, level, [np.asarray(m, bool) for m in _as_targets(members)])
    ra, rb = (bootstrap_attacks(s, members, metrics, n_boot, seed, chunk_elems) for s in (scores_a, scores_b))
    return {k: {m: difference(ra[k][m], rb[k][m], seed, level) for m in metrics} for k in ra}


def paired_bootstrap(scores_a, scores_b, members, metrics: Sequence[str] = METRICS, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95, chunk_elems: int = CHUNK_ELEMS) -> dict[str, dict]:
    """compare_attacks for one attack: {metric: summary}. scores_a, scores_b, members: lists of
    per-target arrays [N_t] (or single arrays for one target)."""
    return compare_attacks({"": scores_a}, {"": scores_b}, members, metrics, n_boot, seed, level, chunk_elems)[""]


def accuracy_difference(acc_a: Sequence[float], acc_b: Sequence[float], n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Test accuracy of A minus B, mean over targets (model i of A vs model i of B), with a percentile
    interval from resampling targets; ci_low/ci_high None with one target. The interval reflects
    model-to-model variation only (the test set is fixed); with few targets (< ~10) it is rough."""
    a, b = np.asarray(acc_a, np.float64), np.asarray(acc_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need one accuracy per target for A and B (got {a.shape}, {b.shape})")
    reps = resample_targets((a - b)[:, None], n_boot, _rng(seed, 2)) if len(a) > 1 else None
    return summarize(a, b, reps, level)


# -- per-class AUC ----------------------------------------------------------------------------------------

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


def auc_spread(per_class: np.ndarray) -> dict:
    """min, max, std (population, ddof 0) and range (max - min) over the classes with a defined AUC,
    and how many there are; NaN everywhere when none."""
    v = np.asarray(per_class, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"min": np.nan, "max": np.nan, "std": np.nan, "range": np.nan, "num_classes": 0}
    return {"min": float(v.min()), "max": float(v.max()), "std": float(v.std()), "range": float(v.max() - v.min()),
            "num_classes": int(len(v))}
