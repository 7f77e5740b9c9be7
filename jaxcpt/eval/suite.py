"""Per-language evaluation: MLM loss/accuracy (+ PPPL) on held-out files and retrieval against a
pivot language on parallel files, with a macro average, a printed table and JSON results.

Language files are `<dir>/<language>.tsv` (`id<TAB>text` or plain lines for MLM; ids required for
retrieval). The languages are the file stems, e.g. `de`, `zh-CN`, `en-US`.

`romanize=True` romanises the text of every language except the pivot with uroman (the tool
`jaxcpt vocab transliterate` romanised the vocabulary with), for MLM and retrieval alike, to
measure a TransMI model on transliterated text. The pivot stays as written: it is the fixed side
of retrieval and, usually English, a control row whose scores must not move.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time

import numpy as np

from jaxcpt.data.text_files import read_texts
from jaxcpt.errors import JaxcptError
from jaxcpt.eval import mlm, retrieval
from jaxcpt.eval.loading import EvalModel
from jaxcpt.vocab.romanize import iter_romanized, romanize_texts

METRICS = ("loss", "accuracy", "unk_rate", "pppl", "x_to_pivot", "pivot_to_x", "mean")


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    seq_len: int = 128  # MLM sequence length (<s> + 126 pieces + </s>)
    max_sequences: int | None = 32  # MLM sequences per language (None: the whole file)
    batch_size: int = 16
    seed: int = 0  # masking seed (same seed → same masks)
    pppl: bool = False
    pppl_sequences: int = 4  # PPPL costs seq_len - 2 forward rows per sequence
    pppl_batch_size: int = 64
    layer: int | None = None  # retrieval layer; None: retrieval.default_layer (8 of 12)
    max_pairs: int | None = 200  # retrieval pairs per language (None: all)
    pivot: str = "en-US"
    romanize: bool = False  # romanise every non-pivot language's text with uroman (TransMI)


def available_languages(directory: pathlib.Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.tsv"))


def check_languages(langs: list[str], directory, kind: str, pivot: str | None = None) -> None:
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise JaxcptError(f"{directory}: no such {kind} directory (expected <language>.tsv files)")
    available = available_languages(directory)
    for lang in [*langs, *([pivot] if pivot else [])]:
        if lang not in available:
            raise JaxcptError(f"{directory}: no {lang}.tsv for language {lang!r}; available: "
                              f"{', '.join(available) or 'none'}")


def resolve_layer(layer: int | None, num_layers: int) -> int:
    layer = retrieval.default_layer(num_layers) if layer is None else layer
    if not 0 <= layer <= num_layers:
        raise JaxcptError(f"layer {layer} is out of range: this model has layers 0..{num_layers} "
                          f"(0 = embeddings, {num_layers} = last)")
    return layer


def evaluate(em: EvalModel, langs: list[str], *, mlm_dir=None, parallel_dir=None,
             options: EvalOptions = EvalOptions()) -> dict:
    """Results dict: {"languages": {lang: {...}}, "average": {...}, settings, notes}.

    For an in-memory model use `EvalModel(model, tokenizer, has_head=True, source=None)`.
    """
    if mlm_dir is None and parallel_dir is None:
        raise JaxcptError("nothing to evaluate: give an MLM directory and/or a parallel directory")
    if not langs:
        raise JaxcptError("no languages given")
    layer = resolve_layer(options.layer, em.num_layers)
    if mlm_dir is not None:
        check_languages(langs, mlm_dir, "MLM")
        longest = em.model.config.max_position_embeddings - em.model.config.pad_token_id - 1
        if not 3 <= options.seq_len <= longest:
            raise JaxcptError(f"sequence length {options.seq_len} is outside 3..{longest} "
                              "(the model's position embeddings); choose another --seq-len")
    pairs = {}
    if parallel_dir is not None:
        check_languages(langs, parallel_dir, "parallel", options.pivot)
        directory = pathlib.Path(parallel_dir)
        pairs = {lang: retrieval.parallel_pairs(directory / f"{lang}.tsv",  # bad files fail early
                                                directory / f"{options.pivot}.tsv",
                                                options.max_pairs)
                 for lang in langs if lang != options.pivot}
        if options.romanize:
            pairs = {lang: romanized_pairs(lang, *triple) for lang, triple in pairs.items()}
    notes = []
    if options.romanize:
        notes.append(f"text romanised with uroman for every language except the pivot "
                     f"{options.pivot}")
    run_mlm = mlm_dir is not None and em.has_head
    if mlm_dir is not None and not em.has_head:
        notes.append("MLM skipped: the model has no MLM head (an encoder); retrieval only")
    results = {"model": str(em.source) if em.source else None, "layer": layer,
               "num_layers": em.num_layers, "pivot": options.pivot if parallel_dir else None,
               "options": dataclasses.asdict(options), "notes": notes, "languages": {}}
    cache: dict = {}
    for number, lang in enumerate(langs, start=1):
        started = time.time()
        row: dict = {}
        if run_mlm:
            row.update(language_mlm(em, pathlib.Path(mlm_dir) / f"{lang}.tsv", options, lang))
        if lang in pairs:
            row.update(language_retrieval(em, pairs[lang], options, layer, cache))
        results["languages"][lang] = row
        print(f"eval [{number}/{len(langs)}] {lang}: " + summary(row)
              + f"  ({time.time() - started:.1f}s)", file=sys.stderr, flush=True)
    results["average"] = macro_average(results["languages"])
    return results


def romanized_pairs(lang: str, ids: list, x_texts: list[str], pivot_texts: list[str]):
    """(ids, romanised x texts, pivot texts); a pair whose romanised text repeats an earlier one
    is dropped, as `retrieval.parallel_pairs` drops repeated texts (top-1 would be ambiguous)."""
    seen, keep = set(), []
    for i, text in enumerate(romanize_texts(x_texts, f"{lang} sentences")):
        if text not in seen:
            seen.add(text)
            keep.append((ids[i], text, pivot_texts[i]))
    return [k for k, _, _ in keep], [t for _, t, _ in keep], [p for _, _, p in keep]


def language_mlm(em: EvalModel, path: pathlib.Path, options: EvalOptions, lang: str) -> dict:
    texts = read_texts(path)
    if options.romanize and lang != options.pivot:
        texts = iter_romanized(texts, f"{lang} paragraphs")  # lazy: only the paragraphs used
    ids_SL = mlm.text_sequences(em.tokenizer, texts, options.seq_len, options.max_sequences)
    if len(ids_SL) == 0:
        raise JaxcptError(f"{path}: not enough text for one sequence of {options.seq_len} tokens; "
                          "lower --seq-len")
    row = mlm.mlm_scores(em.model, em.tokens, ids_SL, batch_size=options.batch_size,
                         seed=options.seed)
    # <unk> is special (never masked): a language the vocabulary cannot cover has few positions
    row["unk_rate"] = float(np.mean(ids_SL[:, 1:-1] == em.tokens.unk_id))
    if options.pppl:
        row.update(mlm.pseudo_perplexity(em.model, em.tokens, ids_SL[:options.pppl_sequences],
                                         batch_size=options.pppl_batch_size, label=lang))
    return row


def language_retrieval(em: EvalModel, pairs, options: EvalOptions, layer: int,
                       cache: dict) -> dict:
    _, x_texts, pivot_texts = pairs
    embed = dict(layer=layer, batch_size=options.batch_size * 2, cache=cache)
    x_NH = retrieval.embed_texts(em.model, em.tokenizer, x_texts, **embed)
    pivot_NH = retrieval.embed_texts(em.model, em.tokenizer, pivot_texts, **embed)
    return retrieval.retrieval_scores(x_NH, pivot_NH)


def macro_average(languages: dict[str, dict]) -> dict:
    """Unweighted mean over the languages that have each metric."""
    average = {}
    for metric in METRICS:
        values = [row[metric] for row in languages.values() if row.get(metric) is not None]
        if values:
            average[metric] = sum(values) / len(values)
            average[f"{metric}_languages"] = len(values)
    return average


def summary(row: dict) -> str:
    parts = []
    if "loss" in row:
        parts.append(f"MLM loss {_fmt(row['loss'])} acc {_fmt(row['accuracy'])} "
                     f"({row['positions']} positions, <unk> {row['unk_rate']:.1%})")
    if "pppl" in row:
        parts.append(f"PPPL {_fmt(row['pppl'], 1)}")
    if "mean" in row:
        parts.append(f"retrieval {_fmt(row['x_to_pivot'])}/{_fmt(row['pivot_to_x'])} "
                     f"({row['pairs']} pairs)")
    return ", ".join(parts) or "nothing to evaluate"


def format_table(results: dict) -> str:
    pivot = results.get("pivot") or "pivot"
    header = ["language", "MLM loss", "acc", "unk", "PPPL", f"X→{pivot}", f"{pivot}→X", "mean",
              "pairs"]
    rows = [header]
    for lang, row in [*results["languages"].items(), ("average", results["average"])]:
        rows.append([lang, _fmt(row.get("loss")), _fmt(row.get("accuracy")),
                     _fmt(row.get("unk_rate")),
                     _fmt(row.get("pppl"), 1), _fmt(row.get("x_to_pivot")),
                     _fmt(row.get("pivot_to_x")), _fmt(row.get("mean")),
                     str(row.get("pairs", ""))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    pairs = sorted({row["pairs"] for row in results["languages"].values() if "pairs" in row})
    if pairs:
        chance = ", ".join(f"1/{p}" for p in pairs)
        lines.append(f"retrieval: layer {results['layer']} of {results['num_layers']}, "
                     f"mean-pooled, cosine; chance = 1/pairs ({chance})")
    lines.extend(results["notes"])
    return "\n".join(lines)


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
