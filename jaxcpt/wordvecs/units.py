"""Units for cross-lingual word vectors: language codes, words, tokenizer pieces, ColexNet+ keys.

Keys follow the ColexNet+ format that OFA consumes: `iso639-3:unit`. Space-delimited scripts
give lower-cased words (`deu:haus`; OFA already encodes a bare word both with and without a
leading space). Scripts without spaces give tokenizer pieces; a piece that starts a word
(SentencePiece `▁`) is written with a leading `$` (`jpn:$ダイアログ`), which OFA turns back into
a space.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Callable, Sequence

import regex

from jaxcpt.errors import JaxcptError

# ISO 639-1 -> ISO 639-3 for the languages jaxcpt's corpora use (and common neighbours). A locale is
# its language subtag (`en-US` -> `en`); three-letter subtags are taken as ISO 639-3 already.
ISO639_3 = {
    "af": "afr", "am": "amh", "ar": "ara", "as": "asm", "az": "aze", "be": "bel", "bg": "bul",
    "bn": "ben", "bo": "bod", "br": "bre", "bs": "bos", "ca": "cat", "cs": "ces", "cy": "cym",
    "da": "dan", "de": "deu", "dz": "dzo", "el": "ell", "en": "eng", "eo": "epo", "es": "spa",
    "et": "est", "eu": "eus", "fa": "fas", "fi": "fin", "fr": "fra", "ga": "gle", "gd": "gla",
    "gl": "glg", "gu": "guj", "he": "heb", "hi": "hin", "hr": "hrv", "hu": "hun", "hy": "hye",
    "id": "ind", "is": "isl", "it": "ita", "ja": "jpn", "ka": "kat", "kk": "kaz", "km": "khm",
    "kn": "kan", "ko": "kor", "ku": "kur", "ky": "kir", "la": "lat", "lo": "lao", "lt": "lit",
    "lv": "lav", "mk": "mkd", "ml": "mal", "mn": "mon", "mr": "mar", "ms": "msa", "my": "mya",
    "nb": "nob", "ne": "nep", "nl": "nld", "nn": "nno", "no": "nor", "or": "ori", "pa": "pan",
    "pl": "pol", "ps": "pus", "pt": "por", "ro": "ron", "ru": "rus", "si": "sin", "sk": "slk",
    "sl": "slv", "sq": "sqi", "sr": "srp", "sv": "swe", "sw": "swa", "ta": "tam", "te": "tel",
    "tg": "tgk", "th": "tha", "tl": "tgl", "tr": "tur", "ug": "uig", "uk": "ukr", "ur": "urd",
    "uz": "uzb", "vi": "vie", "xh": "xho", "yi": "yid", "zh": "zho", "zu": "zul",
}
# Languages written without spaces between words: their units are tokenizer pieces.
UNSEGMENTED = frozenset({"jpn", "zho", "khm", "dzo", "bod", "tha", "lao", "mya"})
# Characters that mark word boundaries invisibly (Khmer/Thai/Tibetan text uses U+200B).
_INVISIBLE_BOUNDARIES = str.maketrans({"\u200b": " ", "\u200c": "", "\ufeff": ""})
_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+")
_HAS_CONTENT = regex.compile(r"[\p{L}\p{M}\p{N}]")


def iso639_3(locale: str) -> str:
    """`en-US` -> `eng`, `zh-CN` -> `zho`, `dzo` -> `dzo`; unknown codes raise JaxcptError."""
    subtag = locale.replace("_", "-").split("-")[0].lower()
    if len(subtag) == 3 and subtag.isalpha():
        return subtag
    if subtag in ISO639_3:
        return ISO639_3[subtag]
    raise JaxcptError(f"locale {locale!r}: no ISO 639-3 code known for {subtag!r}; name the corpus "
                      "file by its ISO 639-3 code (e.g. deu.tsv)")


def normalize(text: str) -> str:
    """The one text normalization of words and dictionary entries: NFKC, lower case."""
    return unicodedata.normalize("NFKC", text).lower()


def words(text: str) -> list[str]:
    """Lower-cased words of a space-delimited script; punctuation and symbols are separators."""
    return _WORD.findall(normalize(text))


def piece_unit(piece: str) -> str | None:
    """A tokenizer piece as a key unit: `▁xy` -> `$xy`; None for pieces without letters/digits."""
    if not _HAS_CONTENT.search(piece) or (piece.startswith("<0x") and piece.endswith(">")):
        return None
    return "$" + piece[1:] if piece.startswith("▁") else piece


def prepare_unsegmented(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE_BOUNDARIES)


# A piece tokenizer maps a batch of paragraphs to their pieces.
PieceTokenizer = Callable[[list[str]], list[list[str]]]


def train_piece_tokenizer(texts: Sequence[str], vocab_size: int = 8000,
                          seed: int = 0) -> PieceTokenizer:
    """A SentencePiece unigram model trained in memory on one language's text."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([prepare_unsegmented(t) for t in texts]), model_writer=model,
        model_type="unigram", vocab_size=vocab_size, hard_vocab_limit=False,
        character_coverage=0.9995, input_sentence_size=0, num_threads=2, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return lambda batch: processor.encode([prepare_unsegmented(t) for t in batch], out_type=str)


def hf_piece_tokenizer(tokenizer_dir) -> PieceTokenizer:
    """Pieces of an HF tokenizer directory (e.g. a merged tokenizer), special tokens left out."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except (OSError, ValueError) as err:
        raise JaxcptError(f"{tokenizer_dir}: not a Hugging Face tokenizer directory "
                          f"({str(err).splitlines()[0]})") from None
    special = set(tokenizer.all_special_ids)

    def pieces(batch: list[str]) -> list[list[str]]:
        encoded = tokenizer([prepare_unsegmented(t) for t in batch], add_special_tokens=False)
        return [tokenizer.convert_ids_to_tokens([i for i in ids if i not in special])
                for ids in encoded["input_ids"]]
    return pieces


def paragraph_units(texts: list[str], pieces: PieceTokenizer | None) -> list[set[str]]:
    """The distinct units of each paragraph: words, or (with a piece tokenizer) piece units."""
    if pieces is None:
        return [set(words(text)) for text in texts]
    return [{unit for unit in map(piece_unit, row) if unit is not None} for row in pieces(texts)]
