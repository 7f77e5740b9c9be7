"""The one way jaxcpt loads an HF tokenizer (light to import: transformers loads on first use).

`load_tokenizer` takes a tokenizer object (returned as is) or an HF tokenizer directory (loaded with
AutoTokenizer.from_pretrained: transformers v5 ignores a bare vocab_file); a missing or unloadable
directory is a one-line JaxcptError naming it. `cached_tokenizer` is the same loader memoized by
directory for the data pipeline, which asks for the same tokenizer many times.
"""

from __future__ import annotations

import functools
import pathlib

from jaxcpt.errors import JaxcptError


def load_tokenizer(tok_or_dir):
    """A tokenizer object as is, or an HF tokenizer directory loaded with AutoTokenizer."""
    if not isinstance(tok_or_dir, (str, pathlib.Path)):
        return tok_or_dir
    path = pathlib.Path(tok_or_dir)
    if not path.is_dir():
        raise JaxcptError(f"{path}: tokenizer directory not found")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JaxcptError(f"{path}: cannot load a tokenizer ({first_line})") from None


@functools.lru_cache(maxsize=8)
def cached_tokenizer(tokenizer_dir: str):
    """`load_tokenizer(tokenizer_dir)`, one shared object per directory string (do not modify it)."""
    return load_tokenizer(str(tokenizer_dir))
