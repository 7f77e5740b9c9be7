"""CLI: `jaxcpt wordvecs` (build cross-lingual vectors from a parallel corpus) and
`jaxcpt wordvecs-eval` (English->X precision@k of any vectors file on gold dictionaries)."""

from __future__ import annotations

import pathlib

from jaxcpt.errors import JaxcptError
from jaxcpt.files import write_json


def _check_new_file(path: pathlib.Path, what: str) -> None:
    if path.exists():
        raise JaxcptError(f"{path}: already exists; choose a new {what} path")
    if not path.parent.is_dir():
        raise JaxcptError(f"{path.parent}: no such directory for the {what}")


def default_corpus() -> pathlib.Path:
    """The shipped libreoffice_help corpus, located without importing `tasks` (whose import
    registers seqio tasks and so loads TensorFlow, seconds this command does not need)."""
    import importlib.util

    spec = importlib.util.find_spec("tasks")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "corpora" / "libreoffice_help" \
        if spec and spec.submodule_search_locations else None
    if path is None or not path.is_dir():
        raise JaxcptError("the shipped libreoffice_help corpus was not found; pass --parallel DIR")
    return path


def eval_json_path(out: pathlib.Path) -> pathlib.Path:
    return out.with_name(out.stem + ".eval.json")


def cmd_wordvecs(args) -> None:
    from jaxcpt.vocab.corpus import parse_langs
    from jaxcpt.wordvecs.build import build_word_vectors
    from jaxcpt.wordvecs.evaluate import dictionary_files, evaluate_vectors, format_table

    out = pathlib.Path(args.out)
    if out.suffix != ".npz":
        raise JaxcptError(f"{out}: word vectors are written as .npz; end --out with .npz")
    _check_new_file(out, "output")
    report = eval_json_path(out)
    if args.eval_dicts:
        _check_new_file(report, "evaluation report")
        if not dictionary_files(args.eval_dicts):
            raise JaxcptError(f"{args.eval_dicts}: no eng-<iso3>.tsv dictionaries")
    if args.tokenizer and not pathlib.Path(args.tokenizer).is_dir():
        raise JaxcptError(f"{args.tokenizer}: no such tokenizer directory")
    corpus = pathlib.Path(args.parallel) if args.parallel else default_corpus()
    built = build_word_vectors(
        corpus, parse_langs(args.langs) if args.langs else None, dim=args.dim,
        min_count=args.min_count, smoothing=args.smoothing, power=args.power,
        tokenizer_dir=args.tokenizer, sp_vocab_size=args.sp_vocab_size, seed=args.seed)
    scores = None
    if args.eval_dicts:
        scores = evaluate_vectors(built.keys, built.vectors, args.eval_dicts)
        built.meta["evaluation"] = {"dictionaries": str(args.eval_dicts), "scores": scores}
    built.save(out)
    counts = ", ".join(f"{code} {n}" for code, n in built.meta["keys_per_language"].items())
    print(f"wrote {out}: {len(built.keys)} keys x {built.vectors.shape[1]} dims "
          f"({built.meta['paragraph_ids']} shared paragraph ids; {counts}) "
          f"in {built.meta['build_seconds']:.1f}s")
    if scores is not None:
        write_json(report, {"vectors": str(out), "dictionaries": str(args.eval_dicts),
                            "scores": scores}, overwrite=False)
        print(format_table(scores))
        print(f"wrote {report}")


def cmd_wordvecs_eval(args) -> None:
    from jaxcpt.wordvecs.evaluate import evaluate_vectors, format_table
    from jaxcpt.wordvecs.units import iso639_3
    from jaxcpt.wordvecs.load import load_word_vectors

    report = pathlib.Path(args.json) if args.json else None
    if report is not None:
        _check_new_file(report, "evaluation report")
    languages = [iso639_3(x.strip()) for x in args.langs.split(",") if x.strip()] \
        if args.langs else None
    loaded = load_word_vectors(args.vectors)
    scores = evaluate_vectors(loaded.keys, loaded.vectors, args.dicts, languages)
    if not scores:
        raise JaxcptError(f"{args.vectors}: no language has both vectors and a dictionary in "
                          f"{args.dicts} (keys must look like `iso639-3:word`)")
    print(format_table(scores))
    if report is not None:
        write_json(report, {"vectors": str(args.vectors), "dictionaries": str(args.dicts),
                            "scores": scores}, overwrite=False)
        print(f"wrote {report}")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "wordvecs", help="cross-lingual word vectors from a parallel corpus "
                         "(paragraph-id occurrence -> PPMI -> truncated SVD), as .npz")
    p.add_argument("--parallel", default=None, metavar="DIR",
                   help="corpus dir with train/<locale>.tsv or flat <locale>.tsv files, "
                        "`id<TAB>text` with ids shared across languages (default: the shipped "
                        "libreoffice_help corpus; only its training split is read)")
    p.add_argument("--langs", default=None,
                   help="comma-separated locales, e.g. en-US,de,fr (default: all files)")
    p.add_argument("--dim", type=int, default=200, help="vector dimension (default 200)")
    p.add_argument("--out", required=True, help="new .npz file (keys, vectors, meta)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="HF tokenizer dir whose pieces are the units of scripts without spaces "
                        "(default: a SentencePiece unigram model trained per such language)")
    p.add_argument("--min-count", type=int, default=2,
                   help="keep units seen in at least this many paragraphs (default 2)")
    p.add_argument("--smoothing", type=float, default=1.0,
                   help="context-distribution smoothing exponent of PPMI (default 1 = none)")
    p.add_argument("--power", type=float, default=0.5,
                   help="vectors = U * S^power (default 0.5)")
    p.add_argument("--sp-vocab-size", type=int, default=8000,
                   help="pieces of the per-language unigram models (default 8000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-dicts", default=None, metavar="DIR",
                   help="directory of eng-<iso3>.tsv gold dictionaries: print English->X p@1/p@5 "
                        "and write them to OUT.eval.json")
    p.set_defaults(func=cmd_wordvecs)

    p = subparsers.add_parser(
        "wordvecs-eval", help="English->X precision@1/@5 of word vectors (.npz, gensim, word2vec) "
                              "on eng-<iso3>.tsv gold dictionaries")
    p.add_argument("vectors", metavar="VECTORS")
    p.add_argument("--dicts", required=True, metavar="DIR",
                   help="directory of eng-<iso3>.tsv files (`english<TAB>translation`)")
    p.add_argument("--langs", default=None,
                   help="comma-separated languages (locales or ISO 639-3; default: all with both)")
    p.add_argument("--json", default=None, help="also write the scores to this new JSON file")
    p.set_defaults(func=cmd_wordvecs_eval)
