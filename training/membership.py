"""The membership protocol (docs/protocol.md, "Membership"): which pool examples each model trains on.

keep[i, j] is True when model i trained on pool example j. Balanced assignment (Carlini et al.):
uniform noise U [M, N], order = U.argsort(axis=0), keep = order < M // 2, so every example is a
member of exactly M // 2 models. The noise depends only on (mia_seed, M, N): every configuration of
a study gets the same matrix, so model i of every configuration trained on the same subset.
"""
from __future__ import annotations

import numpy as np


def keep_matrix(num_models: int, pool_size: int, mia_seed: int) -> np.ndarray:
    """bool [num_models, pool_size]. A lone target (M = 1) gets a random half of the pool (row 0 of
    the 2-model matrix: about half), so it still has non-members."""
    m = max(num_models, 2)
    u = np.random.default_rng(mia_seed).uniform(size=(m, pool_size))
    order = u.argsort(axis=0)
    return (order < m // 2)[:num_models]
