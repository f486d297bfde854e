"""The gradual sparsity schedule of Zhu & Gupta (2017), as used by DPF (docs/pruning.md)."""
from __future__ import annotations


def scheduled_sparsity(it: int, s_f: float, target_iter: int) -> float:
    """s(t) = s_f * (1 - (1 - t/T)^3) for t < T, then s_f.

    Steep at first (many small weights go early, while the network can still adapt), flat near T.
    T = 0 gives s_f at once: one-shot pruning at initialisation."""
    if it >= target_iter:
        return float(s_f)
    return s_f * (1.0 - (1.0 - it / target_iter) ** 3)
