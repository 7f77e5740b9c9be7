"""Training text of a corpus directory, per locale (only the training split is ever read).

Accepted layouts: `DIR/train/<locale>.tsv|.txt` (as shipped in tasks/corpora, which also has a
`heldout/` split that is never opened here) or a flat `DIR/<locale>.tsv|.txt`. Passing a
`heldout/` directory itself is refused, so held-out text cannot leak into a vocabulary.
"""

from __future__ import annotations

import pathlib
import random

from jaxcpt.data.text_files import read_texts
from jaxcpt.errors import JaxcptError

SUFFIXES = (".tsv", ".txt")
HELDOUT_NAMES = ("heldout", "held_out", "held-out")


def training_dir(corpus_dir) -> pathlib.Path:
    corpus_dir = pathlib.Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise JaxcptError(f"{corpus_dir}: corpus directory not found")
    if corpus_dir.resolve().name in HELDOUT_NAMES:
        raise JaxcptError(f"{corpus_dir}: is a held-out split; vocabularies are built from the "
                          "training split only (pass the corpus directory or its train/)")
    return corpus_dir / "train" if (corpus_dir / "train").is_dir() else corpus_dir


def locale_files(corpus_dir) -> dict[str, pathlib.Path]:
    """{locale: file} of the training split."""
    train = training_dir(corpus_dir)
    files: dict[str, pathlib.Path] = {}
    for path in sorted(train.iterdir()):
        if path.is_file() and path.suffix in SUFFIXES:
            if path.stem in files:
                raise JaxcptError(f"{train}: both {files[path.stem].name} and {path.name}; keep one "
                                  f"file per locale")
            files[path.stem] = path
    if not files:
        raise JaxcptError(f"{train}: no <locale>.tsv or <locale>.txt files")
    return files


def select_locales(corpus_dir, langs) -> dict[str, pathlib.Path]:
    """Files of the requested locales (all when `langs` is empty); unknown ones are an error."""
    files = locale_files(corpus_dir)
    langs = parse_langs(langs) if langs else list(files)
    unknown = [lang for lang in langs if lang not in files]
    if unknown:
        raise JaxcptError(f"{training_dir(corpus_dir)}: no training text for {', '.join(unknown)}; "
                          f"available locales: {', '.join(files)}")
    return {lang: files[lang] for lang in langs}


def parse_langs(langs) -> list[str]:
    if isinstance(langs, str):
        langs = langs.split(",")
    out = [lang.strip() for lang in langs if lang.strip()]
    if not out:
        raise JaxcptError("--langs is empty; give comma-separated locales, e.g. de,ru,ja")
    return list(dict.fromkeys(out))


def read_training_texts(corpus_dir, langs, max_per_lang: int | None = None,
                        seed: int = 0) -> dict[str, list[str]]:
    """{locale: paragraphs}; with `max_per_lang`, a seeded random sample of that many per locale
    (in file order), so that no language dominates the vocabulary."""
    texts = {}
    for lang, path in select_locales(corpus_dir, langs).items():
        rows = read_texts(path)
        if max_per_lang is not None and len(rows) > max_per_lang:
            keep = sorted(random.Random(f"{seed}:{lang}").sample(range(len(rows)), max_per_lang))
            rows = [rows[i] for i in keep]
        texts[lang] = rows
    return texts
