"""Masked-token loss/accuracy and pseudo-perplexity on fixed-length `<s> … </s>` sequences.

MLM: RoBERTa masking (jaxcpt.data.masking.mask_tokens, 15%, 80/10/10) with a seeded generator, so
the same text, tokenizer and seed always give the same masks. Loss is the mean negative
log-likelihood in nats over all masked positions of all sequences (micro average).

Pseudo-perplexity (Salazar et al. 2020): every non-special token of a sequence is replaced by
`<mask>` in its own copy of the sequence and scored; PPPL = exp(mean NLL over all those tokens).
That is one forward row per token (seq_len - 2 per sequence), hence the cap on sequences.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from jaxcpt.data.masking import mask_tokens, max_predictions
from jaxcpt.errors import JaxcptError
from jaxcpt.eval.forward import masked_token_stats, pad_rows, split_model
from jaxcpt.eval.loading import TokenSpec


def text_sequences(tokenizer, texts: list[str], seq_len: int,
                   max_sequences: int | None = None) -> np.ndarray:
    """Rows of exactly seq_len ids, `<s> pieces… </s>`, from the texts tokenized and concatenated
    (a remainder shorter than one row is dropped). [S, seq_len] int32."""
    if seq_len < 3:
        raise JaxcptError(f"sequence length {seq_len} is too short (need at least 3)")
    body = seq_len - 2
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if max_sequences is not None and len(stream) >= body * max_sequences:
            break
    rows = len(stream) // body
    if max_sequences is not None:
        rows = min(rows, max_sequences)
    body_SL = np.asarray(stream[: rows * body], np.int32).reshape(rows, body)
    bos_S1 = np.full((rows, 1), tokenizer.bos_token_id, np.int32)
    eos_S1 = np.full((rows, 1), tokenizer.eos_token_id, np.int32)
    return np.concatenate([bos_S1, body_SL, eos_S1], axis=1)


def mask_sequences(ids_SL: np.ndarray, tokens: TokenSpec, seed: int):
    """(inputs_SL, positions_SM, targets_SM, weights_SM) — deterministic for a given seed."""
    return mask_tokens(ids_SL, np.random.default_rng(seed), mask_id=tokens.mask_id,
                       special_ids=set(tokens.special_ids), num_normal_ids=tokens.num_normal_ids,
                       max_predictions=max_predictions(ids_SL.shape[1]))


def mlm_scores(model, tokens: TokenSpec, ids_SL: np.ndarray, *, batch_size: int = 16,
               seed: int = 0) -> dict:
    """{"loss", "accuracy", "positions", "sequences"} of the masked positions of `ids_SL`."""
    if len(ids_SL) == 0:
        return {"loss": None, "accuracy": None, "positions": 0, "sequences": 0}
    inputs_SL, positions_SM, targets_SM, weights_SM = mask_sequences(ids_SL, tokens, seed)
    nll, correct, count = _batched_stats(model, tokens.pad_id, batch_size, inputs_SL,
                                         positions_SM, targets_SM, weights_SM)
    if count == 0:  # only special tokens: nothing was masked
        return {"loss": None, "accuracy": None, "positions": 0, "sequences": int(len(ids_SL))}
    return {"loss": nll / count, "accuracy": correct / count, "positions": int(count),
            "sequences": int(len(ids_SL))}


def pseudo_perplexity(model, tokens: TokenSpec, ids_SL: np.ndarray, *, batch_size: int = 64,
                      label: str = "") -> dict:
    """{"pppl", "pppl_loss", "pppl_tokens", "pppl_sequences"}; each non-special token is masked
    alone in its own copy of the sequence."""
    special_SL = np.isin(ids_SL, list(tokens.special_ids))
    rows, cols = np.nonzero(~special_SL)
    if len(rows) == 0:
        return {"pppl": None, "pppl_loss": None, "pppl_tokens": 0, "pppl_sequences": 0}
    inputs_NL = ids_SL[rows].copy()
    inputs_NL[np.arange(len(rows)), cols] = tokens.mask_id
    positions_N1 = cols[:, None].astype(np.int32)
    targets_N1 = ids_SL[rows, cols][:, None].astype(np.int32)
    nll, _, count = _batched_stats(model, tokens.pad_id, batch_size, inputs_NL, positions_N1,
                                   targets_N1, np.ones_like(targets_N1, np.float32),
                                   progress=f"pppl {label}".strip())
    return {"pppl": float(np.exp(nll / count)), "pppl_loss": nll / count,
            "pppl_tokens": int(count), "pppl_sequences": int(len(ids_SL))}


def _masked_stats_fn(model):
    """(inputs, positions, targets, weights) -> per-row sums, by jaxcpt or a `TorchPeer`."""
    if hasattr(model, "masked_stats"):
        return model.masked_stats
    graphdef, state = split_model(model)
    return lambda *batch: masked_token_stats(graphdef, state, *batch)


def _batched_stats(model, pad_id, batch_size, inputs_NL, positions_NM, targets_NM, weights_NM,
                   progress: str | None = None):
    stats_fn = _masked_stats_fn(model)
    total_nll = total_correct = total_count = 0.0
    started = time.time()
    num_batches = -(-len(inputs_NL) // batch_size)
    for number, start in enumerate(range(0, len(inputs_NL), batch_size), start=1):
        stop = min(start + batch_size, len(inputs_NL))
        nll_B, correct_B, count_B = stats_fn(
            pad_rows(inputs_NL[start:stop], batch_size, pad_id),
            pad_rows(positions_NM[start:stop], batch_size, 0),
            pad_rows(targets_NM[start:stop], batch_size, 0),
            pad_rows(weights_NM[start:stop], batch_size, 0.0))
        real = stop - start  # padded rows are all-pad; drop them before summing
        total_nll += float(np.asarray(nll_B)[:real].sum())
        total_correct += float(np.asarray(correct_B)[:real].sum())
        total_count += float(np.asarray(count_B)[:real].sum())
        if progress and (number % 10 == 0 or number == num_batches):
            eta = (time.time() - started) / number * (num_batches - number)
            print(f"    {progress}: batch {number}/{num_batches}  eta {eta:.0f}s",
                  file=sys.stderr, flush=True)
    return total_nll, total_correct, total_count
