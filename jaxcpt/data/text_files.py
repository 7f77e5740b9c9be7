"""Reading corpus files: one paragraph per line, `id<TAB>text` or plain text, strictly UTF-8."""

from __future__ import annotations

import importlib.util
import pathlib

from jaxcpt.errors import JaxcptError


def shipped_corpora_dir() -> pathlib.Path:
    """tasks/corpora: where the corpora committed with jaxcpt live."""
    # find_spec locates the package without importing it: importing `tasks` registers seqio
    # tasks and loads TensorFlow, which readers of plain files must not pay for.
    spec = importlib.util.find_spec("tasks")
    if spec is None or not spec.submodule_search_locations:
        raise JaxcptError("the `tasks` package (shipped corpora) is not installed")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "corpora"


def shipped_corpus_names() -> set[str]:
    return {p.name for p in shipped_corpora_dir().iterdir() if (p / "train").is_dir()}


def shipped_corpus(name: str = "libreoffice_help") -> pathlib.Path:
    """Directory of a corpus committed under tasks/corpora (splits `train/` and `heldout/`)."""
    path = shipped_corpora_dir() / name
    if not path.is_dir():
        raise JaxcptError(f"{path}: shipped corpus {name!r} not found")
    return path


def read_paragraphs(path) -> list[tuple[str, str]]:
    """[(paragraph_id, text)] of a corpus file; plain-text lines get their line number as id.

    Errors name the file and line: a missing or empty file, bytes that are not UTF-8.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise JaxcptError(f"{path}: no such corpus file")
    data = path.read_bytes()
    rows = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JaxcptError(f"{path}:{number}: not UTF-8 (byte {err.start}); re-encode the file "
                              "as UTF-8") from None
        key, tab, text = line.partition("\t")
        key, text = (key, text) if tab else (str(number), line)
        if text.strip():
            rows.append((key, text.strip()))
    if not rows:
        raise JaxcptError(f"{path}: empty corpus file (no non-blank lines)")
    return rows


def read_texts(path) -> list[str]:
    return [text for _, text in read_paragraphs(path)]
