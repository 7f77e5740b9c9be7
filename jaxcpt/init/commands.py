"""`jaxcpt init-embeddings`: a ready-to-train checkpoint for an extended vocabulary."""

from __future__ import annotations

import json



# Names for --help only; the registry (filled by INITIALIZER_MODULES) is what dispatches.
METHOD_NAMES = ("ofa", "random", "mean", "multivariate", "wechsel", "focus", "clp")


def cmd_init_embeddings(args) -> None:
    from jaxcpt.init.model_init import init_embeddings_checkpoint

    options = {}  # method-specific keywords (methods ignore the ones they do not take)
    if args.dictionaries:
        options["dictionaries"] = args.dictionaries
    if args.languages:
        languages = [code.strip() for code in args.languages.split(",") if code.strip()]
        options["target_languages"] = options["languages"] = languages
    if args.target_text:
        options["target_text_files"] = args.target_text
    if args.helper_model:
        options["helper_model"] = args.helper_model
    stats = init_embeddings_checkpoint(
        args.model, args.target_tokenizer, args.out, method=args.method, dim=args.dim,
        word_vectors=args.word_vectors, seed=args.seed,
        exclude_special_neighbors=args.exclude_special_neighbors, fmt=args.format,
        allow_non_extension=args.allow_non_extension, keep_factors=args.keep_factors, **options)
    print(json.dumps(stats, indent=2))
    detail = ", ".join(f"{stats[key]} {label}" for key, label in
                       (("neighbors", "from neighbours"), ("random", "random"))
                       if key in stats)
    print(f"init-embeddings: {args.method} k={stats['k']}: {stats.get('copied', '?')} copied of "
          f"{stats.get('target_tokens', '?')}{', ' + detail if detail else ''} -> {args.out}")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "init-embeddings",
        help="initialize embeddings for an extended vocabulary (OFA or a baseline) and write a "
             "ready-to-train checkpoint")
    p.add_argument("--model", required=True, metavar="HF_DIR",
                   help="source model: HF directory or jaxcpt checkpoint (with its tokenizer)")
    p.add_argument("--target-tokenizer", required=True, metavar="DIR",
                   help="HF tokenizer directory that extends the source vocabulary")
    p.add_argument("--method", default="ofa", metavar="METHOD",
                   help=f"initializer: {'|'.join(METHOD_NAMES)} (default ofa; any name in "
                        f"jaxcpt.init.INITIALIZERS)")
    p.add_argument("--dim", type=int, default=None, metavar="K",
                   help="embedding factorization k (1..H); default H = dense embeddings")
    p.add_argument("--word-vectors", default=None, metavar="PATH",
                   help="multilingual word vectors (.npz, gensim .kv/.model/.wv, word2vec .bin/"
                        ".txt/.vec); required by ofa, wechsel and focus")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="new output directory")
    p.add_argument("--exclude-special-neighbors", action="store_true",
                   help="never use special tokens or whitespace-only pieces as neighbours")
    p.add_argument("--format", choices=("hf", "jaxcpt"), default="hf",
                   help="hf: HF directory of a plain model transformers loads (with --dim < H the "
                        "factors are multiplied out); jaxcpt: orbax checkpoint, factors kept "
                        "(default hf)")
    p.add_argument("--keep-factors", action="store_true",
                   help="with --format hf and --dim < H: keep the OFA factors (coordinates + "
                        "primitives, trained as factors by `jaxcpt train`); transformers refuses "
                        "such a directory, jaxcpt reads it")
    p.add_argument("--seed", type=int, default=114514,
                   help="seed of the random rows (default 114514, the official OFA seed)")
    p.add_argument("--allow-non-extension", action="store_true",
                   help="accept a target tokenizer that does not keep every source id (it must "
                        "still share at least half of the source tokens)")
    p.add_argument("--dictionaries", metavar="DIR",
                   help="wechsel: directory of eng-<iso3>.tsv bilingual dictionaries")
    p.add_argument("--languages", metavar="ISO3,...",
                   help="wechsel: target languages to align; focus: languages of the auxiliary "
                        "word vectors (default: all)")
    p.add_argument("--target-text", nargs="+", metavar="FILE",
                   help="focus, clp: target-language text files for a token-level Word2Vec "
                        "auxiliary (clp: helper) space")
    p.add_argument("--helper-model", metavar="DIR",
                   help="clp: local HF model that uses the target tokenizer; its input embedding "
                        "is the helper space (instead of --target-text)")
    p.set_defaults(func=cmd_init_embeddings)
