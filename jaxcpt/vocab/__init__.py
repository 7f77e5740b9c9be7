"""Vocabulary tools: extend a SentencePiece vocabulary with new languages, or trim it to a corpus.

Import-light: the heavy modules load on first use of an API function.
"""

from __future__ import annotations


def extend_vocabulary(model_dir, corpus_dir, langs, vocab_size: int, out_dir, **opts):
    """See jaxcpt.vocab.extend.extend_vocabulary; returns the output directory (pathlib.Path)."""
    from jaxcpt.vocab.extend import extend_vocabulary as run

    return run(model_dir, corpus_dir, langs, vocab_size, out_dir, **opts)


def trim_vocabulary(model_dir, corpus_dir, out_dir, **opts):
    """See jaxcpt.vocab.trim.trim_vocabulary; returns the output directory (pathlib.Path)."""
    from jaxcpt.vocab.trim import trim_vocabulary as run

    return run(model_dir, corpus_dir, out_dir, **opts)


__all__ = ["extend_vocabulary", "trim_vocabulary"]
