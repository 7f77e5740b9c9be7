"""A seqio Vocabulary whose ids are exactly an HF tokenizer's ids.

seqio's SentencePieceVocabulary assumes PAD=0 and raw SentencePiece ids; XLM-R shifts every piece
by one (`<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3, `<mask>` last) and extended vocabularies add tokens
sentencepiece does not know. This adapter delegates to the tokenizer itself (its Rust backend),
so `encode`, `encode_tf` (inside tf.data, e.g. seqio.preprocessors.tokenize) and the pipeline's
batched `encode_batch` all return the model's ids.
"""

from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

from jaxcpt.data.tokenizer_info import encode_texts, tokenizer_info
from jaxcpt.tokenizer_loader import cached_tokenizer


class HFVocabulary(seqio.Vocabulary):
    def __init__(self, tokenizer_dir):
        self.tokenizer_dir = str(tokenizer_dir)
        self.info = tokenizer_info(self.tokenizer_dir)
        super().__init__(extra_ids=0)

    @property
    def tokenizer(self):
        return cached_tokenizer(self.tokenizer_dir)

    @property
    def _base_vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def pad_id(self) -> int:
        return self.info.pad_id

    @property
    def eos_id(self) -> int | None:
        return self.info.eos_id

    @property
    def unk_id(self) -> int | None:
        return self.info.unk_id

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return encode_texts(self.tokenizer_dir, texts)

    def _encode(self, s: str) -> list[int]:
        return self.encode_batch([s])[0]

    def _decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """Scalar string -> int32 ids [n]; a rank-1 batch of strings -> RaggedTensor [b, None]."""
        if s.shape.rank == 1:
            return tf.map_fn(self._encode_tf, s,
                             fn_output_signature=tf.RaggedTensorSpec([None], tf.int32))
        ids = tf.numpy_function(
            lambda text: np.asarray(self._encode(_as_str(text)), np.int32), [s], tf.int32,
            stateful=False)
        ids.set_shape([None])
        return ids

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        text = tf.numpy_function(lambda x: self._decode(x).encode("utf-8"), [ids], tf.string,
                                 stateful=False)
        text.set_shape([])
        return text

    def __eq__(self, other) -> bool:
        return isinstance(other, HFVocabulary) and other.tokenizer_dir == self.tokenizer_dir

    def __hash__(self) -> int:
        return hash(("HFVocabulary", self.tokenizer_dir))


def _as_str(value) -> str:
    """numpy_function hands a scalar string over as bytes or as a 0-d object array."""
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
