"""Seq2seq batches (T5 ids): span corruption and the UL2 mixture of denoisers.

With `pack=True` examples are concatenated into one token stream (T5's reduce_concat_tokens) and cut
into chunks sized so span corruption fills the encoder exactly (568 raw tokens -> 512 inputs, 114
targets: no padding); with `pack=False` every example is its own chunk (padded). One chunk per row:
segment ids are 1 on real tokens, 0 on padding.

UL2 (docs/architecture.md, "Span corruption and UL2"): seven denoisers, R (μ=3, r=0.15),
(μ=8, r=0.15) with `[NLU]`; X (μ=3, r=0.5), (μ=8, r=0.5), (μ=64, r=0.15), (μ=64, r=0.5) with
`[NLG]`; S (prefix LM) with `[S2S]`. The mode token leads the inputs. Each span denoiser's chunk
is the longest whose inputs fit L and targets fit T; the S denoiser takes L-2 tokens and splits
them at a uniform point whose suffix fits T. Rates are uniform by default (configurable:
`rates=[...]`, one per denoiser).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcpt.data import span_corruption as sc
from jaxcpt.data.tokenizer_info import TokenizerInfo
from jaxcpt.errors import JaxcptError


@dataclasses.dataclass(frozen=True)
class Denoiser:
    mean_span_length: float = sc.MEAN_SPAN_LENGTH
    noise_density: float = sc.NOISE_DENSITY
    prefix_lm: bool = False
    mode_token: str | None = None


UL2_DENOISERS = (
    Denoiser(3, 0.15, mode_token="[NLU]"), Denoiser(8, 0.15, mode_token="[NLU]"),
    Denoiser(3, 0.5, mode_token="[NLG]"), Denoiser(8, 0.5, mode_token="[NLG]"),
    Denoiser(64, 0.15, mode_token="[NLG]"), Denoiser(64, 0.5, mode_token="[NLG]"),
    Denoiser(prefix_lm=True, mode_token="[S2S]"))


def chunk_length(denoiser: Denoiser, inputs_length: int, targets_length: int) -> int:
    """Raw tokens per chunk: the longest whose corrupted inputs fit L and targets fit T."""
    budget = inputs_length - (denoiser.mode_token is not None)
    if denoiser.prefix_lm:
        return budget - 1
    n, _ = sc.random_spans_lengths(budget, denoiser.noise_density, denoiser.mean_span_length)
    while n > 2 and sc.corrupted_lengths(n, denoiser.noise_density,
                                         denoiser.mean_span_length)[1] > targets_length:
        n -= 1
    return n


class Seq2SeqBatcher:
    def __init__(self, info: TokenizerInfo, *, sequence_length: int, target_length: int,
                 batch_size: int, pack: bool, denoisers=(Denoiser(),), rates=None):
        self.info, self.length, self.target_length = info, sequence_length, target_length
        self.batch_size, self.pack = batch_size, pack
        self.eos_id = info.require_eos()
        self.denoisers = tuple(Denoiser(**d) if isinstance(d, dict) else d for d in denoisers)
        if any(d.mode_token for d in self.denoisers):
            info.require_mode_tokens()
        rates = np.ones(len(self.denoisers)) if rates is None else np.asarray(rates, float)
        if len(rates) != len(self.denoisers) or (rates < 0).any() or rates.sum() <= 0:
            raise JaxcptError(f"ul2 rates {list(rates)} must be {len(self.denoisers)} "
                              "non-negative numbers, not all zero")
        self.rates = rates / rates.sum()
        self.chunk_lengths = [chunk_length(d, sequence_length, target_length)
                              for d in self.denoisers]
        self.sentinels = info.sentinel_ids(min(sequence_length, 1000))

    def next_rows(self, stream, rng: np.random.Generator) -> list[tuple]:
        rows = []
        while len(rows) < self.batch_size:
            which = int(rng.choice(len(self.denoisers), p=self.rates))
            n = self.chunk_lengths[which]
            if self.pack:
                tokens, langs = stream.take(n)
            else:
                tokens, lang = stream.take_from_example(n)
                langs = np.full(len(tokens), lang, np.int32)
            if not len(tokens):
                break
            rows.append((which, tokens, langs))
        return rows

    def materialize(self, rows: list[tuple], rng: np.random.Generator) -> dict:
        B, L, T = self.batch_size, self.length, self.target_length
        batch = {f"{side}_{key}": np.zeros((B, size), np.int32)
                 for side, size in (("encoder", L), ("decoder", T))
                 for key in ("segment_ids", "positions")}
        batch.update(encoder_input_ids=np.full((B, L), self.info.pad_id, np.int32),
                     encoder_lang_ids=np.full((B, L), -1, np.int32),
                     decoder_input_ids=np.full((B, T), self.info.pad_id, np.int32),
                     decoder_target_ids=np.full((B, T), self.info.pad_id, np.int32),
                     decoder_loss_weights=np.zeros((B, T), np.float32),
                     decoder_lang_ids=np.full((B, T), -1, np.int32))
        for b, (which, tokens, langs) in enumerate(rows):
            inputs, input_langs, targets, target_langs = self._denoise(
                self.denoisers[which], tokens, langs, rng)
            if len(inputs) > L or len(targets) > T:
                raise AssertionError(f"denoiser {which}: {len(inputs)}/{len(targets)} tokens "
                                     f"exceed {L}/{T}")
            n_in, n_out = len(inputs), len(targets)
            batch["encoder_input_ids"][b, :n_in] = inputs
            batch["encoder_lang_ids"][b, :n_in] = input_langs
            batch["encoder_segment_ids"][b, :n_in] = 1
            batch["encoder_positions"][b, :n_in] = np.arange(n_in)
            batch["decoder_target_ids"][b, :n_out] = targets
            batch["decoder_input_ids"][b, 1:n_out] = targets[:-1]   # start token = pad (0)
            batch["decoder_input_ids"][b, 0] = self.info.pad_id
            batch["decoder_loss_weights"][b, :n_out] = 1.0
            batch["decoder_lang_ids"][b, :n_out] = target_langs
            batch["decoder_segment_ids"][b, :n_out] = 1
            batch["decoder_positions"][b, :n_out] = np.arange(n_out)
        return batch

    def _denoise(self, denoiser: Denoiser, tokens, langs, rng):
        if denoiser.prefix_lm:
            n = len(tokens)
            low = max(1, n - (self.target_length - 1))
            pivot = int(rng.integers(low, max(low, n - 1) + 1))
            eos = np.int32(self.eos_id)
            inputs = np.concatenate([tokens[:pivot], [eos]]).astype(np.int32)
            input_langs = np.concatenate([langs[:pivot], langs[pivot - 1:pivot]])
            targets = np.concatenate([tokens[pivot:], [eos]]).astype(np.int32)
            target_langs = np.concatenate([langs[pivot:], langs[-1:]])
        else:
            mask = sc.random_spans_noise_mask(len(tokens), rng, denoiser.noise_density,
                                              denoiser.mean_span_length)
            inputs, input_langs, targets, target_langs = sc.corrupt(
                tokens, langs, mask, self.sentinels, self.eos_id)
        if denoiser.mode_token is not None:
            inputs = np.concatenate([[self.info.mode_token_ids[denoiser.mode_token]], inputs])
            input_langs = np.concatenate([input_langs[:1], input_langs])
        return inputs.astype(np.int32), input_langs, targets, target_langs
