"""A resumable stream of tokenized examples: position = (raw examples consumed, token offset)."""

from __future__ import annotations

import collections
from typing import Callable, Iterator

import numpy as np


class TokenStream:
    """Tokens of raw `(text, language)` examples in order, tokenized in chunks.

    `position` names the next unconsumed token: the index of its raw example and the offset inside
    it. A new stream over the same raw sequence, skipped to `position[0]` and created with
    `position`, continues exactly where this one stands (the iterator state of the pipeline).
    """

    def __init__(self, raw_examples: Iterator[tuple[str, str]],
                 encode: Callable[[list[str]], list[list[int]]], lang_index: dict,
                 position: tuple[int, int] = (0, 0), chunk_size: int = 256):
        self._raw = raw_examples
        self._encode = encode
        self._lang_index = lang_index
        self._chunk_size = chunk_size
        self._buffer: collections.deque = collections.deque()   # [ids, lang] of whole examples
        self.raw_index, self.offset = position
        self._exhausted = False
        self._pending_offset = self.offset    # applied to the first example read after a restore

    @property
    def position(self) -> tuple[int, int]:
        return self.raw_index, self.offset

    def _fill(self) -> bool:
        while not self._buffer and not self._exhausted:
            texts, langs = [], []
            for text, lang in self._raw:
                texts.append(text)
                langs.append(self._lang_index[lang])
                if len(texts) == self._chunk_size:
                    break
            else:
                self._exhausted = True
            for ids, lang in zip(self._encode(texts), langs):
                self._buffer.append([np.asarray(ids, np.int32), lang])
            if self._buffer and self._pending_offset:
                self._buffer[0][0] = self._buffer[0][0][self._pending_offset:]
                self._pending_offset = 0
            self._drop_empty()
        return bool(self._buffer)

    def _drop_empty(self) -> None:
        while self._buffer and len(self._buffer[0][0]) == 0:
            self._buffer.popleft()
            self.raw_index, self.offset = self.raw_index + 1, 0

    def remaining_in_example(self) -> int:
        """Tokens left in the current example; 0 when the stream is exhausted."""
        return len(self._buffer[0][0]) if self._fill() else 0

    def peek(self, count: int) -> np.ndarray:
        return self._buffer[0][0][:count] if self._fill() else np.zeros(0, np.int32)

    def take_from_example(self, count: int) -> tuple[np.ndarray, int]:
        """Up to `count` tokens of the current example, and its language index."""
        if not self._fill():
            return np.zeros(0, np.int32), -1
        entry = self._buffer[0]
        ids, lang = entry[0][:count], entry[1]
        entry[0] = entry[0][count:]
        self.offset += len(ids)
        if len(entry[0]) == 0:
            self._buffer.popleft()
            self.raw_index, self.offset = self.raw_index + 1, 0
            self._drop_empty()
        return ids, lang

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` tokens across example boundaries (fewer at the end) and per-token languages."""
        pieces, langs = [], []
        while count > 0:
            ids, lang = self.take_from_example(count)
            if not len(ids):
                break
            pieces.append(ids)
            langs.append(np.full(len(ids), lang, np.int32))
            count -= len(ids)
        if not pieces:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        return np.concatenate(pieces), np.concatenate(langs)
