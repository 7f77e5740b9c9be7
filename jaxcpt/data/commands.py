"""`jaxcpt data rates` and `jaxcpt data peek`: inspect mixtures and batches before training."""

from __future__ import annotations

OBJECTIVE_CHOICES = ("mlm", "span_corruption", "ul2")


def _register(args) -> str:
    """Registers --corpus-dir as NAME (or re-registers the shipped corpus with other rates)."""
    from jaxcpt.data import corpus_tasks, text_files

    path = args.corpus_dir
    if path is None and args.name in text_files.shipped_corpus_names():  # this command's rates
        path = text_files.shipped_corpus(args.name)
    if path is None and args.name not in corpus_tasks.registered_corpora():
        from jaxcpt.errors import JaxcptError

        raise JaxcptError(f"unknown corpus {args.name!r}: pass --corpus-dir DIR, or name a "
                          f"shipped corpus ({', '.join(sorted(text_files.shipped_corpus_names()))})")
    if path:
        replay = tuple(x for x in (args.replay_languages or "").split(",") if x)
        corpus_tasks.register_corpus(args.name, path, alpha=args.alpha, size_unit=args.size_unit,
                                     tokenizer_dir=getattr(args, "tokenizer", None),
                                     replay_languages=replay, replay_share=args.replay_share)
    return args.name


def cmd_rates(args) -> None:
    from jaxcpt.data import corpus_tasks

    info = corpus_tasks.corpus_info(_register(args))
    replay = (f", replay {info.replay_share:g} for {','.join(info.replay_languages)}"
              if info.replay_share else "")
    print(f"mixture {info.name}: alpha={info.alpha}, n_l = {info.size_unit}{replay}")
    print(f"{'language':12s} {'n_l':>10s} {'rate':>8s}")
    for lang in info.languages:
        print(f"{lang:12s} {info.sizes[lang]:10d} {info.rates[lang]:8.4f}")


def cmd_peek(args) -> None:
    import numpy as np

    from jaxcpt.data.pipeline import train_iterator
    from jaxcpt.tokenizer_loader import cached_tokenizer

    name = _register(args)
    it = train_iterator(name, tokenizer_dir=args.tokenizer, objective=args.objective,
                        sequence_length=args.sequence_length, batch_size=args.batch_size,
                        seed=args.seed)
    batch = next(it)
    tok = cached_tokenizer(args.tokenizer)
    for key, value in batch.items():
        print(f"{key:22s} {str(value.shape):12s} {value.dtype}")
    ids_key = "input_ids" if args.objective == "mlm" else "encoder_input_ids"
    lang_key = "lang_ids" if args.objective == "mlm" else "encoder_lang_ids"
    for row in range(min(args.rows, args.batch_size)):
        langs = [it.languages[i] for i in np.unique(batch[lang_key][row]) if i >= 0]
        print(f"--- row {row} ({', '.join(langs)})")
        print("inputs: ", tok.decode(batch[ids_key][row]))
        if args.objective != "mlm":
            print("targets:", tok.decode(batch["decoder_target_ids"][row]))
    print(f"state: {it.get_state()}")


def add_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect seqio mixtures and training batches")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    def common(p):
        p.add_argument("name", metavar="NAME", nargs="?", default="libreoffice_help",
                       help="task or mixture (default: the shipped corpus libreoffice_help)")
        p.add_argument("--corpus-dir", default=None,
                       help="register DIR (train/ and heldout/ of <lang>.tsv|.txt) as NAME first")
        p.add_argument("--alpha", type=float, default=0.3, help="temperature exponent (0.3)")
        p.add_argument("--size-unit", choices=("examples", "tokens"), default="examples",
                       help="n_l of rate ∝ n_l^alpha: examples (default) or tokens (--tokenizer)")
        p.add_argument("--replay-languages", default=None, metavar="L1,L2",
                       help="languages the source model knew: together they get --replay-share")
        p.add_argument("--replay-share", type=float, default=0.0,
                       help="share of the mixture for --replay-languages (default 0: plain rates)")

    p = sub.add_parser("rates", help="per-language sizes and temperature-sampling rates")
    common(p)
    p.add_argument("--tokenizer", default=None, help="tokenizer dir for --size-unit tokens")
    p.set_defaults(func=cmd_rates)

    p = sub.add_parser("peek", help="print the first batch of a pipeline, decoded")
    common(p)
    p.add_argument("--tokenizer", required=True, help="HF tokenizer/model directory")
    p.add_argument("--objective", choices=OBJECTIVE_CHOICES, default="mlm")
    p.add_argument("--sequence-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=2, help="rows to print decoded")
    p.set_defaults(func=cmd_peek)
