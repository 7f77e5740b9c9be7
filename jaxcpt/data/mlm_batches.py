"""MLM batches (encoder-only, XLM-R ids): next-fit packing of `<s> … </s>` segments, RoBERTa
masking.

Every example (or each (L-2)-token piece of a long one) is one segment and gets exactly
min(M, round(0.15·n)) selected tokens, n = its non-special tokens. A segment joins the open row
only while the row's tokens fit L and its selections fit M = `max_predictions`, so no row ever
overflows; the default M = ceil(0.15·L) + max(1, ceil(0.02·L)) leaves room for rounding when many
short segments share a row (a larger M packs denser, a smaller one starts rows earlier).

With `script_V` (LangSAMP, `jaxcpt.data.scripts.script_table`) batches also carry
`masked_script_ids` [B,M]: the script of the segment each masked position belongs to, taken from
the segment's tokens before masking.
"""

from __future__ import annotations

import numpy as np

from jaxcpt.data import scripts
from jaxcpt.data import masking
from jaxcpt.data.masking import MASK_RATE, choose_positions, corrupt_selected, num_to_mask
from jaxcpt.data.tokenizer_info import TokenizerInfo


class MLMBatcher:
    def __init__(self, info: TokenizerInfo, *, sequence_length: int, batch_size: int, pack: bool,
                 max_predictions: int | None = None, mask_rate: float = MASK_RATE,
                 word_start_V: np.ndarray | None = None, script_V: np.ndarray | None = None):
        self.info, self.length, self.batch_size, self.pack = info, sequence_length, batch_size, pack
        self.mask_id = info.require_mask()
        self.max_predictions = max_predictions or masking.max_predictions(sequence_length)
        self.mask_rate = mask_rate
        self.word_start_V = word_start_V
        self.script_V = script_V
        self._special_V = np.zeros(info.vocab_size, bool)
        self._special_V[sorted(info.special_ids)] = True
        self._special_set = set(info.special_ids)
        self.bos_id = info.bos_id if info.bos_id is not None else info.eos_id

    def _count(self, ids: np.ndarray) -> int:
        eligible = len(ids) - int(self._special_V[ids].sum())
        return min(self.max_predictions, num_to_mask(eligible, self.mask_rate))

    def next_rows(self, stream, rng=None) -> list[list]:
        """Up to batch_size rows, each a list of (content ids, lang, selection count).

        `rng` is unused (row layout depends on lengths only); seq2seq batchers draw from it."""
        rows: list[list] = []
        while len(rows) < self.batch_size:
            row, used, selected = [], 0, 0
            while True:
                piece = stream.peek(self.length - 2)
                if not len(piece):
                    break
                count = self._count(piece)
                if row and (not self.pack or used + len(piece) + 2 > self.length
                            or selected + count > self.max_predictions):
                    break
                ids, lang = stream.take_from_example(len(piece))
                row.append((ids, lang, count))
                used, selected = used + len(ids) + 2, selected + count
            if not row:
                break
            rows.append(row)
        return rows

    def materialize(self, rows: list[list], rng: np.random.Generator) -> dict:
        B, L, M = self.batch_size, self.length, self.max_predictions
        batch = {"input_ids": np.full((B, L), self.info.pad_id, np.int32),
                 "segment_ids": np.zeros((B, L), np.int32), "positions": np.zeros((B, L), np.int32),
                 "lang_ids": np.full((B, L), -1, np.int32),
                 "masked_positions": np.zeros((B, M), np.int32),
                 "masked_targets": np.zeros((B, M), np.int32),
                 "masked_weights": np.zeros((B, M), np.float32),
                 "masked_lang_ids": np.full((B, M), -1, np.int32)}
        if self.script_V is not None:
            batch["masked_script_ids"] = np.zeros((B, M), np.int32)
        segment_scripts_L = np.zeros(L, np.int32)
        for b, row in enumerate(rows):
            start, chosen_all = 0, []
            for segment, (ids, lang, count) in enumerate(row, start=1):
                tokens = np.concatenate([[self.bos_id], ids, [self.info.eos_id]]).astype(np.int32)
                span = slice(start, start + len(tokens))
                batch["input_ids"][b, span] = tokens
                batch["segment_ids"][b, span] = segment
                batch["positions"][b, span] = np.arange(len(tokens))
                batch["lang_ids"][b, span] = lang
                if self.script_V is not None:
                    segment_scripts_L[span] = scripts.majority(self.script_V[ids])
                eligible = ~self._special_V[tokens]
                word_start = None if self.word_start_V is None else self.word_start_V[tokens]
                if count:
                    chosen_all.append(start + choose_positions(eligible, count, rng, word_start))
                start += len(tokens)
            chosen = np.concatenate(chosen_all) if chosen_all else np.zeros(0, np.int64)
            n = len(chosen)
            batch["masked_positions"][b, :n] = chosen
            batch["masked_targets"][b, :n] = batch["input_ids"][b, chosen]
            batch["masked_weights"][b, :n] = 1.0
            batch["masked_lang_ids"][b, :n] = batch["lang_ids"][b, chosen]
            if self.script_V is not None:
                batch["masked_script_ids"][b, :n] = segment_scripts_L[chosen]
            corrupt_selected(batch["input_ids"][b], chosen, rng, mask_id=self.mask_id,
                             special_ids=self._special_set, num_normal_ids=self.info.vocab_size)
        return batch
