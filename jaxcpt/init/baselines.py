"""Baseline initializers behind the OFA interface: random, mean, multivariate normal.

Every baseline copies the overlapping rows by string exactly as OFA does (`tokens.overlap`, specials
included) and differs only in the rows of the non-overlapping target tokens:
- random: N(0, initializer_range) per entry (the model's own fresh-embedding rule);
- mean: the mean of the source rows;
- multivariate: draws from N(mean, cov) of the source rows (the "convex hull" family).
They work at k = H (dense rows) and at k < H, where they act on the SVD coordinates F_s of
`factorize` (the same primitives P as OFA): mean and covariance are those of F_s, and random draws
are scaled so that the dense rows F·P keep the per-entry std `initializer_range`.

`overlap_then_fill` is the shared skeleton; WECHSEL and FOCUS use it too.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.factorize import copy_overlap, factorize
from jaxcpt.init.ofa import random_fallback
from jaxcpt.init.result import InitResult, register
from jaxcpt.init.tokens import overlap
from jaxcpt.tokenizer_loader import load_tokenizer

# fill(source_rows [V_s, k], primitives [k, H] | None, new_ids [N], rng) -> ([N, k] rows, stats)
Fill = Callable[[np.ndarray, "np.ndarray | None", np.ndarray, np.random.Generator],
                tuple[np.ndarray, dict]]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def new_token_ids(num_target: int, copied_ids: np.ndarray) -> np.ndarray:
    """Target ids that are not copied from the source, ascending."""
    is_new = np.ones(num_target, bool)
    is_new[copied_ids] = False
    return np.flatnonzero(is_new)


def check_source(source_embeddings, source_tokenizer, name: str = "source_embeddings"):
    source = np.asarray(source_embeddings)
    if source.ndim != 2:
        raise JaxcptError(f"{name} must be a [V_s, H] matrix, got shape {source.shape}")
    if len(source_tokenizer) > source.shape[0]:
        raise JaxcptError(f"{name} has {source.shape[0]} rows but the source tokenizer has "
                          f"{len(source_tokenizer)} tokens; pass the tokenizer of that model")
    return source


def overlap_then_fill(method: str, source_embeddings, source_tokenizer, target_tokenizer, dims,
                      fill: Fill, *, seed: int = 0, source_output_embeddings=None,
                      pairs: tuple[np.ndarray, np.ndarray] | None = None) -> dict[int, InitResult]:
    """{k: InitResult}: overlap rows copied from F_s (or E_s), the other rows from `fill`.

    An untied output embedding (mT5 lm_head) gets its rows by the same rule, in dense form.
    pairs: the (target_ids, source_ids) overlap when the caller already computed it.
    """
    source_tok = load_tokenizer(source_tokenizer)
    target_tok = load_tokenizer(target_tokenizer)
    source = check_source(source_embeddings, source_tok)
    target_ids, source_ids = overlap(source_tok, target_tok) if pairs is None else pairs
    num_target = len(target_tok)
    new_ids = new_token_ids(num_target, target_ids)
    log(f"{method}: {len(target_ids)} of {num_target} target tokens copied by string, "
        f"{len(new_ids)} new")
    output_rows = None
    if source_output_embeddings is not None:
        output_source = check_source(source_output_embeddings, source_tok,
                                     "source_output_embeddings")
        output_rows = copy_overlap(output_source, num_target, target_ids, source_ids)
        output_rows[new_ids], _ = fill(output_source, None, new_ids,
                                       np.random.default_rng([seed, 1]))
    results = {}
    for k, (source_rows, primitives) in factorize(source, dims).items():
        rows = copy_overlap(source_rows, num_target, target_ids, source_ids)
        rows[new_ids], fill_stats = fill(source_rows, primitives, new_ids,
                                         np.random.default_rng([seed, 0, k]))
        stats = {"method": method, "k": int(k), "copied": int(len(target_ids)), **fill_stats}
        log(f"{method} k={k}: " + ", ".join(f"{key} {value}" for key, value in stats.items()
                                           if key not in ("method", "k")))
        results[k] = InitResult(
            embeddings=rows, primitives=None if primitives is None else primitives.astype(np.float32),
            output_rows=output_rows, stats=stats)
    return results


def weighted_rows(weights_QN: np.ndarray, ids_QN: np.ndarray, source_rows: np.ndarray
                  ) -> np.ndarray:
    """[Q, k] float64 rows Σ_n weights[q, n] · source_rows[ids[q, n]], as one sparse product (no
    [Q, N, k] gather, so 150k rows x 64 weights stay cheap)."""
    import scipy.sparse as sp

    num_rows, width = ids_QN.shape
    matrix = sp.csr_matrix((np.asarray(weights_QN, np.float64).ravel(),
                            (np.repeat(np.arange(num_rows), width), np.asarray(ids_QN).ravel())),
                           shape=(num_rows, source_rows.shape[0]))
    return np.asarray(matrix @ np.asarray(source_rows, np.float64))


def neighbor_fill(has_query_V: np.ndarray, weights_QN: np.ndarray, ids_QN: np.ndarray, *,
                  num_target: int, seed: int, stats: dict | None = None) -> Fill:
    """The `fill` of the neighbour methods (FOCUS, WECHSEL): a new token with a query vector
    (`has_query_V[id]`; queries in ascending id order, like the fill ids) gets the weighted sum
    `weights_QN` of the source rows `ids_QN`, any other the official random fallback around the
    source rows' mean and std. `stats` (method-specific) follow the neighbour/random counts."""
    def fill(source_rows, primitives, fill_ids, rng):
        rows = np.zeros((len(fill_ids), source_rows.shape[1]), np.float32)
        is_query = has_query_V[fill_ids]
        rows[is_query] = weighted_rows(weights_QN, ids_QN, source_rows)
        fallback = fill_ids[~is_query]
        if len(fallback):
            mean, std = source_rows.mean(0), source_rows.std(0)
            rows[~is_query] = random_fallback(mean, std, num_target, fallback, seed)
        return rows, {"neighbors": int(is_query.sum()), "random": int(len(fallback)),
                      **copy.deepcopy(stats or {})}
    return fill


def random_rows_std(initializer_range: float, primitives_KH: np.ndarray | None) -> float:
    """Per-entry std of new coordinates so that F·P has std `initializer_range` on average."""
    if primitives_KH is None:
        return float(initializer_range)
    hidden = primitives_KH.shape[1]
    return float(initializer_range * np.sqrt(hidden) / np.linalg.norm(primitives_KH))


@register("random")
def random_init(source_embeddings, source_tokenizer, target_tokenizer, *, dims=None, seed=0,
                initializer_range=0.02, source_output_embeddings=None, **_):
    """New rows ~ N(0, initializer_range) (scaled in coordinate space when k < H)."""

    def fill(source_rows, primitives, new_ids, rng):
        std = random_rows_std(initializer_range, primitives)
        rows = rng.normal(0.0, std, (len(new_ids), source_rows.shape[1]))
        return rows.astype(np.float32), {"random": int(len(new_ids))}

    return overlap_then_fill("random", source_embeddings, source_tokenizer, target_tokenizer,
                             default_dims(dims, source_embeddings), fill, seed=seed,
                             source_output_embeddings=source_output_embeddings)


@register("mean")
def mean_init(source_embeddings, source_tokenizer, target_tokenizer, *, dims=None, seed=0,
              source_output_embeddings=None, **_):
    """New rows = the mean of all source rows (computed in float64)."""

    def fill(source_rows, primitives, new_ids, rng):
        mean_K = np.asarray(source_rows, np.float64).mean(axis=0)
        rows = np.broadcast_to(mean_K.astype(np.float32), (len(new_ids), len(mean_K)))
        return rows, {"mean": int(len(new_ids))}

    return overlap_then_fill("mean", source_embeddings, source_tokenizer, target_tokenizer,
                             default_dims(dims, source_embeddings), fill, seed=seed,
                             source_output_embeddings=source_output_embeddings)


def multivariate_rows(source_rows: np.ndarray, num_rows: int, rng: np.random.Generator
                      ) -> np.ndarray:
    """Draws from N(mean, cov) of the source rows; a singular covariance is fine (eigh method)."""
    source = np.asarray(source_rows, np.float64)
    mean_K = source.mean(axis=0)
    cov_KK = np.cov(source, rowvar=False)
    return rng.multivariate_normal(mean_K, cov_KK, size=num_rows, method="eigh")


@register("multivariate")
def multivariate_init(source_embeddings, source_tokenizer, target_tokenizer, *, dims=None, seed=0,
                      source_output_embeddings=None, **_):
    """New rows ~ N(mean, cov) of the source rows (Hewitt 2021; the "convex hull" family)."""

    def fill(source_rows, primitives, new_ids, rng):
        rows = multivariate_rows(source_rows, len(new_ids), rng)
        return rows.astype(np.float32), {"random": int(len(new_ids))}

    return overlap_then_fill("multivariate", source_embeddings, source_tokenizer,
                             target_tokenizer, default_dims(dims, source_embeddings), fill, seed=seed,
                             source_output_embeddings=source_output_embeddings)


def default_dims(dims, source_embeddings) -> tuple[int, ...]:
    """Default: dense rows (k = H)."""
    return tuple(dims) if dims is not None else (int(np.shape(source_embeddings)[1]),)
