"""Causal-LM batches (decoders): documents packed next-fit into rows of `sequence_length`.

Each document (or each piece of a long one) becomes `[BOS] ids [EOS]` as the tokenizer defines
them (SmolLM2 has no BOS: `<|endoftext|>` alone separates documents), one segment of the row with
positions restarting at 0. `target_ids` are the next token within the segment; `loss_weights` is
1 wherever there is one, so every real token after the first of its document is predicted once
and nothing is predicted across a document boundary. `lang_ids` keep each token's language for
per-language losses and bits per byte.
"""

from __future__ import annotations

import numpy as np

from jaxcpt.data.tokenizer_info import TokenizerInfo


class CausalLMBatcher:
    def __init__(self, info: TokenizerInfo, *, sequence_length: int, batch_size: int,
                 pack: bool):
        self.info, self.length, self.batch_size, self.pack = info, sequence_length, batch_size, pack
        self.prefix = [] if info.bos_id is None else [info.bos_id]
        self.suffix = [] if info.eos_id is None else [info.eos_id]
        self.pad_id = next((i for i in (info.pad_id, info.eos_id) if i is not None), 0)
        self.piece = sequence_length - len(self.prefix) - len(self.suffix)

    def next_rows(self, stream, rng=None) -> list[list]:
        """Up to batch_size rows, each a list of (content ids, lang); `rng` is unused."""
        rows: list[list] = []
        extra = len(self.prefix) + len(self.suffix)
        while len(rows) < self.batch_size:
            row, used = [], 0
            while True:
                piece = stream.peek(self.piece)
                if not len(piece) or (row and (not self.pack
                                               or used + len(piece) + extra > self.length)):
                    break
                ids, lang = stream.take_from_example(len(piece))
                row.append((ids, lang))
                used += len(ids) + extra
            if not row:
                break
            rows.append(row)
        return rows

    def materialize(self, rows: list[list], rng: np.random.Generator | None = None) -> dict:
        B, L = self.batch_size, self.length
        batch = {"input_ids": np.full((B, L), self.pad_id, np.int32),
                 "target_ids": np.zeros((B, L), np.int32),
                 "loss_weights": np.zeros((B, L), np.float32),
                 "segment_ids": np.zeros((B, L), np.int32),
                 "positions": np.zeros((B, L), np.int32),
                 "lang_ids": np.full((B, L), -1, np.int32)}
        for b, row in enumerate(rows):
            start = 0
            for segment, (ids, lang) in enumerate(row, start=1):
                tokens = np.concatenate([self.prefix, ids, self.suffix]).astype(np.int32)
                n = len(tokens)
                batch["input_ids"][b, start:start + n] = tokens
                batch["target_ids"][b, start:start + n - 1] = tokens[1:]
                batch["loss_weights"][b, start:start + n - 1] = 1.0
                batch["segment_ids"][b, start:start + n] = segment
                batch["positions"][b, start:start + n] = np.arange(n)
                batch["lang_ids"][b, start:start + n] = lang
                start += n
        return batch
