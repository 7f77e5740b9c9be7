"""CLP-Transfer initialization (Ostendorff & Rehm, 2023): new tokens as similarity-weighted sums.

Overlapping tokens are copied by string (`tokens.overlap`, the rule every jaxcpt initializer shares,
so the rows copied are those of OFA/FOCUS). Every new token v with a vector in a *helper* embedding
space of the target tokenizer gets

    δ(v, o) = cos(h_v, h_o) / Σ_o' cos(h_v, h_o'),      row(v) = Σ_o δ(v, o) · source_row(o),

the sums running over ALL overlapping tokens o that have a helper vector (no top-k, temperature or
centring): the weighting of the paper and of the reference code (malteos/clp-transfer, `apply_clp`:
raw cosine similarities divided by their sum, then `np.average`). Negative similarities are kept as
the reference keeps them: signed weights, normalized by the signed sum (they still sum to 1). Where
that sum is not positive (Σ sim <= 1e-6 · Σ |sim|) the reference would divide by ~0 or flip every
weight's sign; such rows fall back instead (stats `degenerate`; `max_abs_weight_sum`, the largest
Σ_o |δ(v, o)| of a combined row, is 1 without negative weights and shows how far any nearly
cancelling sum amplified a row). Raw cosines are used on purpose: trained embedding spaces are
anisotropic, which keeps the sum well away from 0; centring them (as FOCUS does) would make it
cancel. Overlapping tokens without a helper vector are left out of the sums, which changes nothing:
the reference's zero vector has cosine 0 with everything.

Helper spaces (one of):
- `helper_model`: the input embedding of a local HF model whose tokenizer is the target tokenizer
  (the paper's setting: a small model trained with the target tokenizer);
- `target_texts` / `target_text_files`: token-level Word2Vec trained on target-language text
  tokenized with the target tokenizer (`focus.token_aux_vectors`). This is the "small model jaxcpt
  trains on the target text" option: a vocabulary just built with `jaxcpt vocab extend` has no HF
  model that uses it, and Word2Vec on a few MB of text takes minutes on a CPU.
New tokens without a helper vector (never seen in the text) draw from N(mean, std) of the source
rows (OFA's `random_fallback`, also the reference's initial value for every row).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.baselines import default_dims, log, overlap_then_fill
from jaxcpt.init.focus import split_by_vector, token_aux_vectors
from jaxcpt.init.neighbors import normalized
from jaxcpt.init.ofa import random_fallback
from jaxcpt.init.result import register
from jaxcpt.init.tokens import overlap, vocab
from jaxcpt.tokenizer_loader import load_tokenizer

# A similarity sum below this share of Σ|sim| is degenerate (cancellation: weights explode).
MIN_SUM_SHARE = 1e-6


def helper_model_vectors(path, target_tokenizer) -> np.ndarray:
    """[V_t, D] float64 input-embedding rows of the local HF model at `path` (AutoModel, no hub
    download), checked against the target tokenizer: the same vocabulary when the directory holds
    a tokenizer, at least V_t embedding rows in any case (padded matrices are cut to V_t)."""
    from jaxcpt.convert.hf_files import has_tokenizer

    path, target_tok = pathlib.Path(path), load_tokenizer(target_tokenizer)
    if not path.is_dir():
        raise JaxcptError(f"helper model directory {path} does not exist")
    num_target = len(target_tok)
    if has_tokenizer(path):
        helper_vocab, target_vocab = vocab(load_tokenizer(path)), vocab(target_tok)
        if helper_vocab != target_vocab:
            differ = sum(1 for t, i in target_vocab.items() if helper_vocab.get(t) != i)
            raise JaxcptError(
                f"helper model {path} uses another tokenizer ({len(helper_vocab)} tokens, {differ} "
                f"of the {num_target} target tokens missing or at another id); CLP needs a model "
                f"that uses the target tokenizer")
    weight = _input_embedding(path)
    if weight.ndim != 2 or weight.shape[0] < num_target:
        raise JaxcptError(f"helper model {path} has {weight.shape[0]} embedding rows but the "
                          f"target tokenizer has {num_target} tokens; CLP needs a model that uses "
                          f"the target tokenizer")
    if not has_tokenizer(path):
        print(f"jaxcpt: warning: helper model {path} holds no tokenizer; only its vocabulary size "
              f"({weight.shape[0]} rows) was checked against the target tokenizer", file=sys.stderr)
    return np.asarray(weight[:num_target], np.float64)


def _input_embedding(path: pathlib.Path) -> np.ndarray:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()   # "weights not used" of a task head is expected here
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JaxcptError(f"cannot load helper model {path} with transformers: {first_line}"
                          ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()
    return model.get_input_embeddings().weight.detach().float().numpy()


def clp_combination(unit_VD: np.ndarray, candidate_ids: np.ndarray, candidate_rows_CK: np.ndarray,
                    query_ids: np.ndarray, block: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CLP rows of the query tokens, in blocks of queries (memory bounded for 250k vocabularies).

    unit_VD: unit helper rows; candidate_ids: target ids of the overlapping tokens; candidate_rows:
    their source rows [C, k]. Returns ([Q, k] float64 rows, [Q] bool: the similarity sum was
    positive, the other rows are zero and left to the caller's fallback; [Q] Σ_o |δ(v, o)|, 1 when
    no similarity is negative, large when the signed sum nearly cancels).
    """
    candidates_DC = np.ascontiguousarray(unit_VD[candidate_ids].T)
    rows_CK = np.asarray(candidate_rows_CK, np.float64)
    # ~32M similarities (256 MB float64) per block, whatever the number of candidates.
    block = block or int(np.clip(2 ** 25 // max(len(candidate_ids), 1), 16, 4096))
    out_QK = np.zeros((len(query_ids), rows_CK.shape[1]), np.float64)
    ok_Q = np.zeros(len(query_ids), bool)
    abs_weight_sum_Q = np.full(len(query_ids), np.inf)
    for start in range(0, len(query_ids), block):
        sims_BC = unit_VD[query_ids[start:start + block]] @ candidates_DC
        total_B = sims_BC.sum(axis=1)
        abs_total_B = np.abs(sims_BC).sum(axis=1)
        good_B = total_B > MIN_SUM_SHARE * abs_total_B
        inverse_B = np.divide(1.0, total_B, out=np.zeros_like(total_B), where=good_B)
        end = start + len(sims_BC)
        out_QK[start:end] = (sims_BC @ rows_CK) * inverse_B[:, None]
        ok_Q[start:end] = good_B
        abs_weight_sum_Q[start:end][good_B] = abs_total_B[good_B] * inverse_B[good_B]
    return out_QK, ok_Q, abs_weight_sum_Q


def helper_space(target_tok, helper_model, target_texts, target_text_files, aux_dim, seed):
    """[V_t, D] helper vectors (zero rows: no vector) and a name for the log."""
    if target_text_files:
        from jaxcpt.data.text_files import read_texts

        target_texts = [text for path in target_text_files for text in read_texts(path)]
    if helper_model is not None and target_texts is not None:
        raise JaxcptError("clp takes one helper space: a helper model or target-language texts, "
                          "not both")
    if helper_model is not None:
        return helper_model_vectors(helper_model, target_tok), f"helper model {helper_model}"
    if target_texts is not None:
        return (token_aux_vectors(target_tok, target_texts, dim=aux_dim, seed=seed),
                "token-level Word2Vec on the target texts")
    raise JaxcptError("clp needs a helper embedding space: --helper-model DIR (an HF model that "
                      "uses the target tokenizer) or --target-text FILE... (target-language text)")


@register("clp")
def clp(source_embeddings, source_tokenizer, target_tokenizer, *, dims=None, seed=0,
        helper_model=None, target_texts=None, target_text_files=None, aux_dim: int = 100,
        source_output_embeddings=None, block: int | None = None, **_):
    """CLP-Transfer rows: see the module docstring.

    helper_model: HF model directory that uses the target tokenizer; or target_texts (strings) /
    target_text_files (corpus files) for a token-level Word2Vec helper space of `aux_dim`.
    """
    source_tok, target_tok = load_tokenizer(source_tokenizer), load_tokenizer(target_tokenizer)
    helper_VD, space = helper_space(target_tok, helper_model, target_texts, target_text_files,
                                    aux_dim, seed)
    target_ids, source_ids = overlap(source_tok, target_tok)
    unit_VD = normalized(helper_VD)
    has_vector = np.any(unit_VD != 0, axis=1)
    candidates, new_ids, query_ids = split_by_vector(
        has_vector, target_ids, len(target_tok),
        "no overlapping token has a helper vector; CLP cannot combine them")
    log(f"clp: {space}: {len(query_ids)} of {len(new_ids)} new tokens combined from "
        f"{len(candidates)} overlapping tokens")

    def fill(source_rows, primitives, fill_ids, rng):   # fill_ids: new_ids, ascending
        rows, combined, abs_weight_sum = clp_combination(unit_VD, target_ids[candidates],
                                         source_rows[source_ids[candidates]], query_ids, block)
        out = np.zeros((len(fill_ids), source_rows.shape[1]), np.float64)
        position = np.flatnonzero(has_vector[fill_ids])[combined]   # fill_ids[has_vector]: queries
        out[position] = rows[combined]
        is_fallback = np.ones(len(fill_ids), bool)
        is_fallback[position] = False
        fallback = fill_ids[is_fallback]
        if len(fallback):
            mean, std = source_rows.mean(0), source_rows.std(0)
            out[is_fallback] = random_fallback(mean, std, len(target_tok), fallback, seed)
        return out.astype(np.float32), {
            "neighbors": int(combined.sum()), "random": int(len(fallback)),
            "degenerate": int((~combined).sum()), "overlap_with_helper_vector": int(len(candidates)),
            "max_abs_weight_sum": float(abs_weight_sum[combined].max()) if combined.any() else 0.0,
            "helper_space": space}

    return overlap_then_fill("clp", source_embeddings, source_tok, target_tok,
                             default_dims(dims, source_embeddings), fill, seed=seed,
                             source_output_embeddings=source_output_embeddings,
                             pairs=(target_ids, source_ids))
