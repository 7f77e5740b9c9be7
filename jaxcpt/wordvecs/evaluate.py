"""English->X translation retrieval with cross-lingual word vectors, scored on gold dictionaries.

For each English dictionary word that has a vector and at least one gold translation among the
language's keys, all keys of language X are ranked by cosine similarity; precision@k is the share
of such words with a gold translation in the top k. Works for any (keys, vectors) in the ColexNet+
key format (`iso639-3:unit`, bare keys = English; a leading `$` = word boundary, ignored here).
"""

from __future__ import annotations

import pathlib
from collections import defaultdict

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.wordvecs.units import normalize


def key_language(key: str) -> tuple[str, str]:
    """(iso639-3, unit without `$`) of a key, as OFA splits keys (`len > 4 and key[3] == ':'`)."""
    if len(key) > 4 and key[3] == ":":
        return key[:3], key[4:].lstrip("$")
    return "eng", key.lstrip("$")


def read_dictionary(path) -> dict[str, set[str]]:
    """{english: {translations}} of an `english<TAB>translation` file, normalized like the units."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise JaxcptError(f"{path}: no such dictionary file")
    pairs: dict[str, set[str]] = defaultdict(set)
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise JaxcptError(f"{path}:{number}: not UTF-8; re-encode the file as UTF-8") from None
        english, tab, translation = line.partition("\t")
        if tab and english.strip() and translation.strip():
            pairs[normalize(english.strip())].add(normalize(translation.strip()))
    if not pairs:
        raise JaxcptError(f"{path}: no `english<TAB>translation` lines")
    return dict(pairs)


def dictionary_files(dict_dir) -> dict[str, pathlib.Path]:
    """{iso3: path} of the `eng-<iso3>.tsv` files in a directory."""
    dict_dir = pathlib.Path(dict_dir)
    if not dict_dir.is_dir():
        raise JaxcptError(f"{dict_dir}: no such dictionary directory")
    return {p.stem.split("-", 1)[1]: p for p in sorted(dict_dir.glob("eng-*.tsv"))}


def translation_precision(keys, vectors, dictionary: dict[str, set[str]], language: str,
                          ks=(1, 5), block: int = 1024) -> dict:
    """{"n": evaluated words, "p@k": precision} of English->`language` retrieval over its keys."""
    keys = [str(k) for k in np.asarray(keys)]
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(keys):
        raise JaxcptError(f"vectors of shape {vectors.shape} do not match {len(keys)} keys")
    english: dict[str, int] = {}
    target_rows, target_units = [], []
    for row, key in enumerate(keys):
        code, unit = key_language(key)
        if code == "eng":
            # Prefer the bare key over a `$` variant of the same word.
            if unit not in english or not key.split(":", 1)[-1].startswith("$"):
                english[unit] = row
        elif code == language:
            target_rows.append(row)
            target_units.append(unit)
    present = set(target_units)
    queries = [(english[w], gold) for w, gold in sorted(dictionary.items())
               if w in english and gold & present]
    result = {"n": len(queries)} | {f"p@{k}": 0.0 for k in ks}
    if not queries:
        return result
    unit_V = np.array(target_units, dtype=object)
    target_VD = _unit_rows(vectors[target_rows])
    top = min(max(ks), len(target_rows))
    hits = {k: 0 for k in ks}
    for start in range(0, len(queries), block):
        chunk = queries[start:start + block]
        sims_QV = _unit_rows(vectors[[row for row, _ in chunk]]) @ target_VD.T
        best_QT = np.argpartition(-sims_QV, top - 1, axis=1)[:, :top]
        order_QT = np.take_along_axis(
            best_QT, np.argsort(-np.take_along_axis(sims_QV, best_QT, axis=1), axis=1), axis=1)
        for (_, gold), ranked in zip(chunk, order_QT):
            found = [unit_V[i] in gold for i in ranked]
            for k in ks:
                hits[k] += any(found[:k])
    return result | {f"p@{k}": hits[k] / len(queries) for k in ks}


def evaluate_vectors(keys, vectors, dict_dir, languages=None, ks=(1, 5)) -> dict[str, dict]:
    """{iso3: {"n", "p@1", "p@5"}} for every language with both vectors and an eng-<iso3> file."""
    files = dictionary_files(dict_dir)
    present = {key_language(str(k))[0] for k in np.asarray(keys)}
    wanted = sorted(present - {"eng"}) if languages is None else list(languages)
    return {code: translation_precision(keys, vectors, read_dictionary(files[code]), code, ks)
            for code in wanted if code in files and code in present}


def format_table(scores: dict[str, dict]) -> str:
    lines = ["language      n    p@1    p@5"]
    lines += [f"eng->{code}  {s['n']:6d}  {s['p@1']:.3f}  {s['p@5']:.3f}"
              for code, s in scores.items()]
    return "\n".join(lines)


def _unit_rows(x_ND: np.ndarray) -> np.ndarray:
    return x_ND / np.maximum(np.linalg.norm(x_ND, axis=1, keepdims=True), 1e-12)
