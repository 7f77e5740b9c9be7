"""`jaxcpt vocab extend|trim|transliterate` (heavy imports stay inside the commands)."""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def cmd_extend(args) -> None:
    from jaxcpt.vocab.extend import extend_vocabulary

    extend_vocabulary(args.model, args.corpus, args.langs, args.vocab_size, args.out,
                      add_tokens=args.add_tokens or (),
                      max_sentences_per_lang=args.max_sentences_per_lang, seed=args.seed,
                      character_coverage=args.character_coverage,
                      protect_langs=args.protect_langs)


def cmd_trim(args) -> None:
    from jaxcpt.vocab.trim import trim_vocabulary

    trim_vocabulary(args.model, args.corpus, args.out, langs=args.langs, keep_top=args.keep_top)


def cmd_transliterate(args) -> None:
    from jaxcpt.vocab.transliterate import transliterate_vocabulary

    transliterate_vocabulary(args.model, args.out, merge_mode=args.merge_mode, fmt=args.format)


def add_commands(subparsers) -> None:
    vocab = subparsers.add_parser(
        "vocab", help="extend a SentencePiece vocabulary with new languages, trim it to a "
                      "corpus, or add its romanised pieces (TransMI)")
    sub = vocab.add_subparsers(dest="vocab_command", required=True, metavar="ACTION")
    corpus_help = ("corpus directory: DIR/train/<locale>.tsv|.txt (only the training split is "
                   "read; heldout/ is never opened) or a flat DIR/<locale>.tsv|.txt")

    p = sub.add_parser("extend", help="train a unigram model on new languages and merge it into "
                                      "the model's tokenizer (source ids unchanged)")
    p.add_argument("--model", required=True, metavar="HF_DIR",
                   help="directory with sentencepiece.bpe.model (XLM-R) or spiece.model (T5/mT5)")
    p.add_argument("--corpus", required=True, metavar="DIR", help=corpus_help)
    p.add_argument("--langs", required=True, help="comma-separated locales, e.g. de,ru,ja")
    p.add_argument("--vocab-size", required=True, type=_positive_int, metavar="N",
                   help="size of the unigram model trained on the new languages (soft limit); "
                        "pieces the source already has are not added again")
    p.add_argument("--out", required=True, metavar="DIR", help="new directory (must not exist or "
                   "be empty): the .model file, an HF tokenizer and vocab_report.json")
    p.add_argument("--add-tokens", default="", metavar="T1,T2",
                   help="user tokens appended as never-split pieces, e.g. '[NLU],[NLG],[S2S]'")
    p.add_argument("--max-sentences-per-lang", type=_positive_int, default=20_000, metavar="N",
                   help="balance languages: a seeded sample of at most N paragraphs each "
                        "(default 20000)")
    p.add_argument("--character-coverage", type=float, default=0.9995,
                   help="sentencepiece character coverage (default 0.9995)")
    p.add_argument("--protect-langs", default="", metavar="LOCALES",
                   help="e.g. en-US,pt (the source languages): leave out new pieces that would "
                        "change how their training text is segmented (default: none, as Glot500)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("trim", help="keep only the pieces a corpus uses: trimmed tokenizer + "
                                    "model rows + trim_map.json")
    p.add_argument("--model", required=True, metavar="HF_DIR",
                   help="HF model directory with an MLM head (XLM-R) or a T5/mT5 model, and its "
                        "SentencePiece tokenizer")
    p.add_argument("--corpus", required=True, metavar="DIR", help=corpus_help)
    p.add_argument("--langs", default=None,
                   help="comma-separated locales to keep (default: every locale of the corpus)")
    p.add_argument("--keep-top", type=int, default=0, metavar="N",
                   help="also keep the N best-scored (most frequent) source pieces (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="new directory (must not exist or "
                   "be empty)")
    p.set_defaults(func=cmd_trim)

    p = sub.add_parser("transliterate", help="TransMI: add the uroman romanisations of the "
                                             "vocabulary's pieces and initialize them from the "
                                             "pieces they came from (no training)")
    p.add_argument("--model", required=True, metavar="HF_DIR",
                   help="HF model directory (or jaxcpt checkpoint) with a SentencePiece unigram "
                        "tokenizer (XLM-R, Glot500, mT5); byte-level BPE is refused")
    p.add_argument("--merge-mode", choices=("max", "min", "average"), default="max",
                   help="a romanised piece several pieces give: score and row from the max- or "
                        "min-scored of them, or their mean score and mean row (default max, "
                        "the paper's best)")
    p.add_argument("--format", choices=("hf", "jaxcpt"), default="hf",
                   help="hf: a transformers-loadable directory (default); jaxcpt: a checkpoint")
    p.add_argument("--out", required=True, metavar="DIR", help="new directory (must not exist or "
                   "be empty): model, tokenizer, init_stats.json and transmi_report.json")
    p.set_defaults(func=cmd_transliterate)
