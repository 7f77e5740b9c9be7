"""Romanisation with uroman (Hermjakob et al. 2018), shared by `jaxcpt vocab transliterate`
(TransMI) and `jaxcpt eval --romanize`, so the vocabulary and the evaluated text are romanised by
the very same tool and rules.

Building `uroman.Uroman()` loads its rule and Unicode tables (~3 s), so one instance is built
lazily and reused for the whole process. No language code is passed: a multilingual vocabulary has
no single language, and evaluation text must be romanised as the vocabulary was.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterable, Iterator, Sequence

from jaxcpt.errors import JaxcptError

SPIECE_SPACE = "▁"
PROGRESS_SECONDS = 5.0


@functools.lru_cache(maxsize=1)
def uroman_instance():
    """The process-wide `uroman.Uroman()` (built on first use)."""
    try:
        import uroman
    except ImportError:
        raise JaxcptError("the `uroman` package is not installed; install it with "
                          "`pip install uroman` (pure Python)") from None
    started = time.perf_counter()
    instance = uroman.Uroman()
    print(f"uroman: loaded its tables in {time.perf_counter() - started:.1f} s", file=sys.stderr,
          flush=True)
    return instance


def romanize(text: str) -> str:
    """`text` in Latin script. uroman leaves ASCII unchanged, so ASCII text skips it.

    uroman 1.3 crashes on a few strings (e.g. '百分之': its number rules); such text is romanised
    word by word, and a word that still fails character by character."""
    if text.isascii():
        return text
    try:
        return uroman_instance().romanize_string(text)
    except Exception:  # noqa: BLE001 - any uroman bug: retry on smaller units
        words = text.split(" ")
        if len(words) > 1:
            return " ".join(romanize(word) for word in words)
        if len(text) > 1:
            return "".join(romanize(ch) for ch in text)
        return text


def romanize_texts(texts: Iterable[str], label: str = "texts") -> list[str]:
    """Romanised `texts`, with a count and rate on stderr every few seconds."""
    return list(iter_romanized(list(texts), label))


def iter_romanized(texts: Sequence[str], label: str = "texts") -> Iterator[str]:
    """Romanised `texts` one by one (a consumer that stops early romanises no more)."""
    if any(not text.isascii() for text in texts):
        uroman_instance()  # its loading time is not counted as romanisation
    progress = Progress(len(texts), label)
    for text in texts:
        yield romanize(text)
        progress.step()
    progress.done()


def romanize_piece(piece: str) -> str | None:
    """The romanisation of one SentencePiece piece, keeping its word-start marker `▁`; None when
    it is unusable as a piece: empty, or containing whitespace or an inner `▁` (uroman puts
    spaces around some punctuation, e.g. '，' -> ', '; such a piece would never be matched)."""
    marker = SPIECE_SPACE if piece.startswith(SPIECE_SPACE) else ""
    body = piece[len(marker):]
    if not body:
        return None
    roman = romanize(body).strip()
    if not roman or SPIECE_SPACE in roman or any(ch.isspace() for ch in roman):
        return None
    return marker + roman


class Progress:
    """Prints `label: done/total (rate/s)` to stderr at most every PROGRESS_SECONDS."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.count = total, label, 0
        self.started = self.last = time.perf_counter()

    def step(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self._print(now)

    def done(self) -> None:
        if self.last != self.started:  # only long runs report their end
            self._print(time.perf_counter())

    def _print(self, now: float) -> None:
        rate = self.count / max(now - self.started, 1e-9)
        print(f"romanised {self.count}/{self.total} {self.label} ({rate:.0f}/s)",
              file=sys.stderr, flush=True)
