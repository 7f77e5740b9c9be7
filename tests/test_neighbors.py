"""top_neighbors (float32 candidates in row blocks + float64 re-ranking) against brute force."""

import numpy as np

from jaxcpt.init.neighbors import LANES, TILE_COLUMNS, normalized, top_neighbors


def test_top_neighbors_equal_brute_force_float64_with_ties_zeros_and_exclusions():
    rng = np.random.default_rng(0)
    num_source = 2 * TILE_COLUMNS + 5 * LANES + 17   # 3 tiles, the last one with a partial lane
    source = rng.standard_normal((num_source, 24))
    source[5:9] = source[4]   # duplicated rows: tied similarities
    source[100:140] = 0       # rows without a vector: similarity 0
    excluded = np.zeros(num_source, bool)
    excluded[rng.choice(num_source, 300, replace=False)] = True
    query = rng.standard_normal((700, 24))
    query[:50] = source[rng.integers(0, num_source, 50)] + 1e-3 * rng.standard_normal((50, 24))
    query[50:60] = -source[4]   # the duplicated rows are the farthest: no effect on the top
    query[60:70] = source[4]    # ... and here the nearest, tied with each other
    source_unit, query_unit = normalized(source), normalized(query)

    ids, sims, tie = top_neighbors(query_unit, source_unit, 10, excluded_S=excluded, block=256)

    exact = query_unit @ source_unit.T
    exact[:, excluded] = -np.inf
    expected = -np.sort(-exact, axis=1)[:, :11]
    np.testing.assert_allclose(sims, expected[:, :10], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(tie, np.abs(expected[:, 9] - expected[:, 10]) <= 1e-12)
    assert not tie[:50].any() and tie[60:70].sum() == 0   # 5 tied rows sit inside the top 10
    chosen = np.take_along_axis(exact, ids, axis=1)
    np.testing.assert_allclose(chosen, sims, rtol=0, atol=1e-12)
    assert not excluded[ids].any()
    assert all(len(set(row)) == 10 for row in ids)


def test_candidates_are_the_float32_best_of_every_tile():
    """The tile pass keeps exactly each row's `count` largest float32 similarities (lanes skipped
    only when they cannot beat the row's count-th best), across tiles and a partial last lane."""
    from jaxcpt.init.neighbors import _Candidates

    rng = np.random.default_rng(1)
    source = normalized(rng.standard_normal((2 * TILE_COLUMNS + 3 * LANES + 5, 16)))
    query = normalized(rng.standard_normal((300, 16)))
    count = 21
    chosen = _Candidates(source, count).best(query)
    sims = query.astype(np.float32) @ source.astype(np.float32).T
    assert all(len(set(row)) == count for row in chosen)
    ranked = -np.sort(-sims, axis=1)
    chosen_sims = np.take_along_axis(sims, chosen, axis=1)
    # the smallest chosen value is the count-th largest (up to the matmul's blocking)
    np.testing.assert_allclose(chosen_sims.min(axis=1), ranked[:, count - 1], rtol=0, atol=1e-6)
    assert (chosen >= 2 * TILE_COLUMNS + 3 * LANES).any()   # columns past the last full lane too
