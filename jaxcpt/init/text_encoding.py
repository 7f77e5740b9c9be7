"""Token ids of many short strings, as `tokenizer.encode(text, add_special_tokens=False)` gives
them.

OFA encodes ~3 strings per word-vector key (millions of them): the slow part of an OFA init. Two
exact ways, picked per tokenizer by `text_encoder`:

- whole strings (`encode_batch`): every string goes through the full Rust pipeline, 512 strings per
  pre-tokenized batch item (each word of an item is handled exactly like a separate `encode`, and
  the per-Encoding overhead of encoding short strings one by one is gone);
- pre-split strings (`PresplitEncoder`), for SentencePiece-style pre-tokenizers (`Metaspace`,
  alone or after `WhitespaceSplit`). A fast tokenizer splits off added tokens, normalizes,
  pre-tokenizes, and its model then encodes each pre-token on its own. A string holding no added
  token's text is normalized by the tokenizer's own normalizer and brought to Metaspace form here
  (`Presplit`), and each *distinct* result is encoded once by the bare model: `w` and `' ' + w`
  have the same Metaspace form, a third fewer model calls. The model is a Unigram model's numba
  Viterbi pass (`unigram_viterbi`, ~1-1.5 µs per word-sized form at 400k pieces, against ~10 µs
  in Rust) where it reproduces the model, else the Rust model behind a `cutter`. Strings holding
  an added token's text are encoded whole. The numba pass mirrors rules private to `tokenizers`,
  so each encoder checks it against the Rust model on its first batch (`check_viterbi`) and keeps
  to Rust for the whole run on any difference.

tests/test_subword_encoding.py checks both against `tokenizer.encode`, string for string.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from dataclasses import dataclass

import numpy as np

from jaxcpt.errors import JaxcptError
from jaxcpt.init.unigram_viterbi import UnigramViterbi

Encoded = tuple[np.ndarray, np.ndarray]   # (ids, index of the text each id belongs to), text order

# Strings per `encode_batch` item (each string is one word of a pre-tokenized sequence).
STRINGS_PER_ITEM = 512

# Strings of its first batch on which each encoder checks the numba Viterbi pass (`check_viterbi`).
VITERBI_SAMPLE = 256

# Rust's `char::is_whitespace` (Unicode White_Space), which the WhitespaceSplit pre-tokenizer splits
# on. Python's `str.split()` differs (it also splits on U+001C..U+001F).
_WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
                         "\u3000]+")


def encode_batch(tokenizer, texts: list[str]) -> Encoded:
    """Whole strings through `tokenizer` (an HF tokenizer or a `tokenizers.Tokenizer`)."""
    from tokenizers import Tokenizer

    backend = (tokenizer if isinstance(tokenizer, Tokenizer)
               else getattr(tokenizer, "backend_tokenizer", None))
    if backend is None:  # a slow (Python) tokenizer
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        ids = np.fromiter(itertools.chain.from_iterable(encoded), np.int64, int(lengths.sum()))
        return ids, np.repeat(np.arange(len(encoded), dtype=np.int64), lengths)
    items = [texts[i:i + STRINGS_PER_ITEM] for i in range(0, len(texts), STRINGS_PER_ITEM)]
    encodings = backend.encode_batch(items, is_pretokenized=True, add_special_tokens=False)
    id_lists = [e.ids for e in encodings]  # each `.ids` access builds a new Python list
    lengths = np.fromiter(map(len, id_lists), np.int64, len(id_lists))
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(id_lists), np.int64, total)
    word_ids = list(itertools.chain.from_iterable(e.word_ids for e in encodings))
    if None in word_ids:  # cannot happen without special tokens; never guess an id's text
        raise JaxcptError("tokenizer returned a token without a word index for pre-tokenized "
                          "input; cannot attribute ids to words")
    item_start = np.repeat(np.arange(len(encodings), dtype=np.int64) * STRINGS_PER_ITEM, lengths)
    return ids, item_start + np.fromiter(word_ids, np.int64, total)


# Separates the strings of one batch item for the cutter (below): `encode_batch_fast`, ~15% faster
# than `encode_batch`, gives no word ids, so the strings are told apart by this token's id.
CUT = "\U0010fffd"

# Characters that mark text and piece boundaries in the joined string of a batch (two that occur
# in none of its texts are picked per batch).
_MARKERS = ("\x00", "\x01", "\ufffe", "\uffff", "\U0010fffe", "\U0010ffff")


class Presplit:
    """Normalized strings brought to the form the model's pre-tokens are cut from, many at once,
    for the pre-tokenizer configs written out here: `Metaspace` (prepend_scheme "always" or
    "never"), or `WhitespaceSplit` then `Metaspace` with prepend "always" and split.

    WhitespaceSplit drops runs of whitespace; Metaspace replaces spaces by `▁`, prepends `▁` to
    each non-empty piece that lacks it, and (split) cuts before every `▁`. The cut is left to
    `cutter`, a tokenizer holding only `Metaspace(prepend_scheme="never")` and the model: after the
    prepend every whitespace piece starts with `▁`, so the pieces can be glued back together. The
    texts are joined into one string and handled with `str`/`re` operations (no Python call per
    text); `w` and `' ' + w` come out the same, so they are encoded once.
    """

    def __init__(self, replacement: str, prepend: bool, split: bool, whitespace_split: bool):
        self.rep, self.prepend, self.split = replacement, prepend, split
        self.whitespace_split = whitespace_split

    def key(self) -> tuple:
        return self.rep, self.prepend, self.split, self.whitespace_split

    @classmethod
    def of(cls, spec: dict | None) -> "Presplit | None":
        if spec is None:
            return None
        steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]
        types = [step.get("type") for step in steps]
        if types not in (["Metaspace"], ["WhitespaceSplit", "Metaspace"]):
            return None
        metaspace = steps[-1]
        scheme, split = metaspace.get("prepend_scheme"), metaspace.get("split", True)
        # "first" prepends only to the piece at offset 0 of the original text: not written out.
        if scheme not in ("always", "never"):
            return None
        if types[0] == "WhitespaceSplit" and (scheme != "always" or not split):
            return None   # the whitespace pieces could not be glued back together
        return cls(metaspace.get("replacement", "▁"), scheme == "always", split,
                   types[0] == "WhitespaceSplit")

    def cutter(self, model):
        """The model behind (split) Metaspace(prepend_scheme="never"), no normalizer, and one added
        token: `CUT`, which the encoder puts between the strings of a batch item."""
        from tokenizers import AddedToken, Tokenizer, pre_tokenizers

        cutter = Tokenizer(model)
        if self.split:
            cutter.pre_tokenizer = pre_tokenizers.Metaspace(
                replacement=self.rep, prepend_scheme="never", split=True)
        cutter.add_special_tokens([AddedToken(CUT, special=True, normalized=False)])
        return cutter

    def __call__(self, texts: list[str]) -> list[str] | None:
        """The texts in pre-split form; None when no two marker characters are free or a text
        holds `CUT`."""
        plain = "".join(texts)
        free = [m for m in _MARKERS if m not in plain and m != self.rep]
        if len(free) < 2 or CUT in plain:
            return None
        sep, brk = free[:2]          # text boundary, whitespace boundary
        rep = self.rep
        joined = sep.join(texts)
        if self.whitespace_split:
            joined = _WHITESPACE.sub(brk, joined)
            # whitespace at either end of a text leaves no piece; every other run separates two
            joined = (joined.replace(sep + brk, sep).replace(brk + sep, sep)
                      .removeprefix(brk).removesuffix(brk))
            # `rep` before each inner piece that lacks it (prepend is "always" here), glued
            joined = (joined.replace(brk, brk + rep).replace(brk + rep + rep, brk + rep)
                      .replace(brk, ""))
        else:
            joined = joined.replace(" ", rep)
        texts = joined.split(sep)
        if self.prepend:             # each text's first piece
            texts = [t if not t or t.startswith(rep) else rep + t for t in texts]
        return texts


@dataclass
class Forms:
    """A batch's distinct pre-split strings, which one each text is, and the texts encoded whole."""

    distinct: list[str]
    text_distinct: np.ndarray   # [texts] index into `distinct`
    whole: list[int]            # texts holding an added token's text


class PresplitEncoder:
    """Encodes strings through `Presplit` (see the module docstring)."""

    def __init__(self, backend, presplit: Presplit):
        self.backend, self.presplit = backend, presplit
        self.cutter = presplit.cutter(backend.model)
        self.cut_id = self.cutter.token_to_id(CUT)
        # the same ids as the cutter, ~8x faster, for the Unigram models it reproduces
        self.viterbi = UnigramViterbi.of(backend.model, presplit.rep if presplit.split else None)
        self.viterbi_checked = False   # see check_viterbi, run before its first ids are used
        self.normalize = backend.normalizer.normalize_str if backend.normalizer else None
        added = backend.get_added_tokens_decoder().values()
        contents = {t.content for t in added} | {self.normalize(t.content) for t in added
                                                 if t.normalized and self.normalize}
        contents.discard("")
        self.added_text = (re.compile("|".join(map(re.escape, sorted(contents))))
                           if contents else None)
        # joins the texts for that search: in no added token, so no match spans two texts
        self.added_sep = next(m for m in _MARKERS if not any(m in c for c in contents))
        normalizer = backend.normalizer
        # Encoders with equal keys turn a batch into the same Forms.
        self.form_key = (None if normalizer is None else normalizer.__getstate__(),
                         frozenset(contents), presplit.key())

    @classmethod
    def of(cls, tokenizer) -> "PresplitEncoder | None":
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or backend.truncation is not None:
            return None
        # the pre-tokenizer's own JSON (the whole tokenizer's is ~0.4 s to write at 400k pieces)
        pre_tokenizer = backend.pre_tokenizer
        presplit = Presplit.of(None if pre_tokenizer is None
                               else json.loads(pre_tokenizer.__getstate__()))
        return None if presplit is None else cls(backend, presplit)

    def prepare(self, texts: list[str]) -> Forms | None:
        """The texts' distinct pre-split forms; None when the batch must be encoded whole. Depends
        only on `form_key`, so encoders with equal keys (a merged tokenizer and its source) can
        share it."""
        normalized = list(map(self.normalize, texts)) if self.normalize else texts
        whole = self._with_added_text(texts)
        if self.normalize:   # normalized added tokens are matched after normalizing
            whole |= self._with_added_text(normalized)
        whole = sorted(whole)
        if whole:   # encoded whole (see encode_forms); here they are empty
            normalized = list(normalized)
            for i in whole:
                normalized[i] = ""
        presplit = self.presplit(normalized)
        if presplit is None:
            return None
        index: dict[str, int] = {}
        text_distinct = np.fromiter((index.setdefault(t, len(index)) for t in presplit), np.int64,
                                    len(presplit))
        return Forms(list(index), text_distinct, whole)

    def encode_forms(self, texts: list[str], forms: Forms | None) -> Encoded:
        """`texts` encoded, given `prepare(texts)`."""
        if forms is None:
            return encode_batch(self.backend, texts)
        if self.viterbi is not None and not self.viterbi_checked and forms.distinct:
            self.check_viterbi(forms.distinct)
        encoded = self.viterbi.encode(forms.distinct) if self.viterbi else None
        distinct_ids, distinct_of = encoded or self._cut_and_encode(forms.distinct)
        ids, text_of = _expand(forms.text_distinct, distinct_ids, distinct_of, len(forms.distinct))
        if forms.whole:
            whole_ids, whole_of = encode_batch(self.backend, [texts[i] for i in forms.whole])
            ids = np.concatenate([ids, whole_ids])
            text_of = np.concatenate([text_of, np.asarray(forms.whole, np.int64)[whole_of]])
            order = np.argsort(text_of, kind="stable")
            ids, text_of = ids[order], text_of[order]
        return ids, text_of

    def __call__(self, texts: list[str]) -> Encoded:
        return self.encode_forms(texts, self.prepare(texts))

    def check_viterbi(self, strings: list[str]) -> bool:
        """The run-time guard of the numba Viterbi pass: whether it gives the Rust model's ids on
        an evenly spaced sample of `strings` (VITERBI_SAMPLE of them) and on the vocabulary's
        probe strings (`UnigramViterbi.probes`: unknown characters, ties, repeats); if not, this
        encoder drops it for the rest of the run and says so in one line on stderr. Run once, on
        the first batch it would encode, before any of its ids are used: the pass mirrors
        behaviour private to `tokenizers` (tie order, the unknown-character penalty, fusing of
        unknowns), which a new release could change silently. 1-6 ms (at 47k-250k pieces), nearly
        all of it the Rust model on the ~300 strings; the probes cost ~35 ms at 250k pieces."""
        self.viterbi_checked = True
        step = max(1, len(strings) // VITERBI_SAMPLE)
        sample = [s for s in strings[::step][:VITERBI_SAMPLE] if _utf32_encodable(s)]
        # probes without the cutter's own token, and without spaces (its Metaspace replaces them)
        sample += [p for p in self.viterbi.probes if CUT not in p and " " not in p]
        sample = list(dict.fromkeys(sample))
        numba_ids = _per_string(self.viterbi.encode(sample), len(sample))
        rust_ids = _per_string(self._cut_and_encode(sample), len(sample))
        for string, ours, theirs in zip(sample, numba_ids, rust_ids):
            if ours != theirs:
                import tokenizers

                print(f"jaxcpt: warning: the numba Unigram Viterbi pass differs from the Rust "
                      f"model of tokenizers {tokenizers.__version__} on {string!r}: numba {ours}, "
                      f"tokenizers {theirs}; encoding with the Rust model for this run (exact, "
                      f"~8x slower)", file=sys.stderr, flush=True)
                self.viterbi = None
                return False
        return True

    def _cut_and_encode(self, strings: list[str]) -> Encoded:
        """Pre-split strings (none holds `CUT`) through the cutter, each one followed by a `CUT`
        word in its item."""
        items = []
        for start in range(0, len(strings), STRINGS_PER_ITEM):
            words = strings[start:start + STRINGS_PER_ITEM]
            item = [CUT] * (2 * len(words))
            item[0::2] = words
            items.append(item)
        encodings = self.cutter.encode_batch_fast(items, is_pretokenized=True,
                                                  add_special_tokens=False)
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int64)
        is_cut = ids == self.cut_id
        return ids[~is_cut], np.cumsum(is_cut)[~is_cut]   # string i comes after i cuts

    def _with_added_text(self, texts: list[str]) -> set[int]:
        """Indices of the texts in which an added token's text occurs."""
        if self.added_text is None or not texts:
            return set()
        ends = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)) + 1)
        starts = [m.start() for m in self.added_text.finditer(self.added_sep.join(texts))]
        return set(np.searchsorted(ends, starts, side="right").tolist())


def _utf32_encodable(string: str) -> bool:
    """False for strings holding a lone surrogate (the numba pass leaves those to Rust)."""
    try:
        string.encode("utf-32-le")
    except UnicodeEncodeError:
        return False
    return True


def _per_string(encoded: Encoded, count: int) -> list[list[int]]:
    """Each of `count` strings' ids, from (ids, index of the string each id belongs to)."""
    ids, string_of = encoded
    bounds = np.searchsorted(string_of, np.arange(count + 1))
    return [ids[bounds[i]:bounds[i + 1]].tolist() for i in range(count)]


def _expand(text_distinct: np.ndarray, distinct_ids: np.ndarray, distinct_of: np.ndarray,
            num_distinct: int) -> Encoded:
    """The ids of each text's distinct string, in text order, tagged with the text."""
    length = np.bincount(distinct_of, minlength=num_distinct)
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    lengths = length[text_distinct]
    total = int(lengths.sum())
    # position of each output id inside its text's run, plus the run's start in distinct_ids
    run_offset = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    within = np.arange(total, dtype=np.int64) - np.repeat(run_offset, lengths)
    ids = distinct_ids[np.repeat(start[text_distinct], lengths) + within]
    return ids, np.repeat(np.arange(len(text_distinct), dtype=np.int64), lengths)


class WholeEncoder:
    """Every string through the full pipeline (`encode_batch`); the interface of PresplitEncoder."""

    form_key = None

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def prepare(self, texts: list[str]) -> None:
        return None

    def encode_forms(self, texts: list[str], forms: None) -> Encoded:
        return encode_batch(self.tokenizer, texts)

    def __call__(self, texts: list[str]) -> Encoded:
        return encode_batch(self.tokenizer, texts)


def text_encoder(tokenizer) -> PresplitEncoder | WholeEncoder:
    """The fastest exact way to encode many strings with `tokenizer`."""
    fast = PresplitEncoder.of(tokenizer)
    return fast if fast is not None else WholeEncoder(tokenizer)
