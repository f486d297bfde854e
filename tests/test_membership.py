import numpy as np

from training.membership import keep_matrix


def test_every_example_in_exactly_half_the_models():
    for m in (2, 5, 17):
        k = keep_matrix(m, 1000, 0)
        assert k.shape == (m, 1000) and k.dtype == bool
        assert (k.sum(0) == m // 2).all()


def test_same_seed_same_matrix_across_configurations_and_lone_target_gets_half():
    np.testing.assert_array_equal(keep_matrix(17, 500, 3), keep_matrix(17, 500, 3))
    assert not np.array_equal(keep_matrix(17, 500, 3), keep_matrix(17, 500, 4))
    lone = keep_matrix(1, 1000, 0)
    assert lone.shape == (1, 1000) and abs(lone.sum() - 500) < 60  # about half


def test_models_get_different_subsets():
    k = keep_matrix(8, 2000, 0)
    assert all(not np.array_equal(k[i], k[j]) for i in range(8) for j in range(i + 1, 8))
    assert abs(k.sum(1) - 1000).max() < 150  # each model trains on about half the pool
