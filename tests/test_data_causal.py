"""Causal-LM batches: invariants of the packing (every token of every document lands once, in
order; targets are the next token of the same document; nothing is predicted across a document
boundary; positions restart per document), with and without BOS."""

import numpy as np
import pytest

from jaxcpt.data.causal_batches import CausalLMBatcher
from jaxcpt.data.tokenizer_info import TokenizerInfo


class ListStream:
    """The two calls a batcher makes on a TokenStream, over fixed documents."""

    def __init__(self, docs):
        self.docs = [[np.asarray(d, np.int32), lang] for lang, d in docs]

    def peek(self, count):
        return self.docs[0][0][:count] if self.docs else np.zeros(0, np.int32)

    def take_from_example(self, count):
        ids, lang = self.docs[0][0][:count], self.docs[0][1]
        self.docs[0][0] = self.docs[0][0][count:]
        if not len(self.docs[0][0]):
            self.docs.pop(0)
        return ids, lang


def _info(bos):
    return TokenizerInfo(path="test", vocab_size=100, pad_id=None, eos_id=0, bos_id=bos,
                         mask_id=None, unk_id=None, special_ids=frozenset({0, 1}),
                         mode_token_ids={})


@pytest.mark.parametrize("bos", [None, 1])
def test_packed_rows_predict_each_next_token_once_within_its_document(bos):
    rng = np.random.default_rng(0)
    docs = [(i % 3, rng.integers(2, 100, n)) for i, n in enumerate([5, 9, 30, 3, 12, 7, 40])]
    batcher = CausalLMBatcher(_info(bos), sequence_length=16, batch_size=64, pack=True)
    batch = batcher.materialize(batcher.next_rows(ListStream(docs)))
    prefix, rebuilt, lang_of = [] if bos is None else [bos], [], []
    for b in range(batch["input_ids"].shape[0]):
        segs = batch["segment_ids"][b]
        for s in range(1, segs.max() + 1 if segs.max() else 1):
            at = np.flatnonzero(segs == s)
            tokens = batch["input_ids"][b, at]
            assert list(tokens[:len(prefix)]) == prefix and tokens[-1] == 0  # [BOS] ids EOS
            assert list(batch["positions"][b, at]) == list(range(len(at)))
            np.testing.assert_array_equal(batch["target_ids"][b, at[:-1]], tokens[1:])
            assert list(batch["loss_weights"][b, at]) == [1.0] * (len(at) - 1) + [0.0]
            rebuilt.append(tokens[len(prefix):-1])
            lang_of.append(int(batch["lang_ids"][b, at[0]]))
        assert batch["loss_weights"][b, segs == 0].sum() == 0
    # long documents are split into pieces; joined back in order they are the documents
    pieces = iter(zip(rebuilt, lang_of))
    for lang, doc in docs:
        got = []
        while len(got) < len(doc):
            ids, piece_lang = next(pieces)
            assert piece_lang == lang
            got.extend(ids)
        np.testing.assert_array_equal(got, doc)
    assert next(pieces, None) is None
    assert (batch["segment_ids"] > 0).sum(axis=1).max() <= 16


def test_without_packing_each_row_holds_one_piece():
    batcher = CausalLMBatcher(_info(None), sequence_length=16, batch_size=4, pack=False)
    batch = batcher.materialize(batcher.next_rows(ListStream([(0, [5, 6]), (1, [7, 8, 9])])))
    assert list(batch["segment_ids"].max(axis=1)) == [1, 1, 0, 0]
    assert batch["input_ids"][0, :3].tolist() == [5, 6, 0]
    assert batch["target_ids"][0, :2].tolist() == [6, 0] and batch["loss_weights"][0, 2] == 0
