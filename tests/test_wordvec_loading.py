"""Loading word vectors: gensim KeyedVectors (object and files), word2vec text/binary, jaxcpt .npz;
streamed reads equal full reads; unknown or broken files give one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcpt.errors import JaxcptError
from jaxcpt.wordvecs.load import (WordVectors, check_word_vectors_path, iter_word_vector_chunks,
                                   load_word_vectors)

KEYS = ["the", "eng:house", "deu:$haus", "deu:haus$", "rus:дом", "fra:maison", "ell:σπίτι", "$"]


@pytest.fixture(scope="module")
def keyed_vectors():
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=7)
    vectors = np.random.default_rng(0).standard_normal((len(KEYS), 7)).astype(np.float32)
    kv.add_vectors(KEYS, vectors)
    return kv


def streamed(path_or_obj, rows=3) -> WordVectors:
    chunks = list(iter_word_vector_chunks(path_or_obj, rows=rows))
    assert all(len(k) == len(v) <= rows for k, v in chunks)
    return WordVectors([k for keys, _ in chunks for k in keys],
                       np.concatenate([v for _, v in chunks]))


def assert_same(loaded: WordVectors, kv):
    assert list(loaded.keys) == KEYS and all(isinstance(k, str) for k in loaded.keys)
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(loaded.vectors), kv.vectors)


@pytest.mark.parametrize("fmt", ["object", "kv", "txt", "bin", "vec-noheader", "npz", "npz-fortran",
                                 "npz-compressed"])
def test_every_format_loads_and_streams_identically(fmt, keyed_vectors, tmp_path):
    kv = keyed_vectors
    source = kv
    if fmt == "kv":
        source = tmp_path / "vectors.kv"
        kv.save(str(source), sep_limit=0)  # vectors in a separate .npy: memory-mapped on load
    elif fmt == "txt":
        source = tmp_path / "vectors.txt"
        kv.save_word2vec_format(str(source), binary=False)
    elif fmt == "bin":
        source = tmp_path / "vectors.bin"
        kv.save_word2vec_format(str(source), binary=True)
    elif fmt == "vec-noheader":
        source = tmp_path / "vectors.vec"
        source.write_text("".join(f"{k} {' '.join(repr(float(x)) for x in v)}\n"
                                  for k, v in zip(KEYS, kv.vectors)), encoding="utf-8")
    elif fmt.startswith("npz"):
        source = tmp_path / "vectors.npz"
        vectors = np.asfortranarray(kv.vectors) if fmt == "npz-fortran" else kv.vectors
        save = np.savez_compressed if fmt == "npz-compressed" else np.savez
        save(source, keys=np.array(KEYS), vectors=vectors)
    check_word_vectors_path(source) if fmt != "object" else None
    loaded = load_word_vectors(source)
    assert_same(loaded, kv)
    if fmt in ("kv", "npz"):
        assert isinstance(loaded.vectors, np.memmap)
    if fmt.startswith("npz") and fmt != "npz-compressed":  # 4M keys stay a mapped string array
        assert isinstance(loaded.keys, np.memmap)
    assert_same(streamed(source), kv)


def test_bad_files_give_one_line_errors(tmp_path):
    cases = {"vectors.xyz": "word\t1 2\n", "vectors.txt": "2 3\nword 1 2 3\nbroken 1 2\n",
             "vectors.npz": "not a zip", "vectors.bin": "2 3\nab"}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(JaxcptError) as err:
            load_word_vectors(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(JaxcptError, match="unknown word-vector format"):
        check_word_vectors_path(tmp_path / "vectors.xyz")
    with pytest.raises(JaxcptError, match="do not exist"):
        load_word_vectors(tmp_path / "missing.kv")
    np.savez(tmp_path / "other.npz", words=np.array(["a"]), emb=np.zeros((1, 2)))
    with pytest.raises(JaxcptError, match="holds `keys` and `vectors`"):
        load_word_vectors(tmp_path / "other.npz")
    for save in (np.savez, np.savez_compressed):  # object keys: mapped or read, never unpickled
        save(tmp_path / "objects.npz", keys=np.array(["a", 1], dtype=object),
             vectors=np.zeros((2, 3), np.float32))
        with pytest.raises(JaxcptError, match="`keys` holds Python objects"):
            load_word_vectors(tmp_path / "objects.npz")
