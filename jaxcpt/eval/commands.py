"""`jaxcpt eval`: per-language MLM loss (+PPPL) and retrieval top-1, as a table and JSON."""

from __future__ import annotations

import pathlib

from jaxcpt.errors import JaxcptError
from jaxcpt.files import OutputExistsError, write_json


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="per-language MLM loss/accuracy/PPPL and sentence retrieval top-1")
    p.add_argument("--model", required=True,
                   help="Hugging Face model directory (with or without MLM head / factors) or "
                        "jaxcpt checkpoint; needs tokenizer files")
    p.add_argument("--mlm-dir", default=None,
                   help="directory of <language>.tsv held-out files for MLM loss")
    p.add_argument("--parallel-dir", default=None,
                   help="directory of <language>.tsv `id<TAB>text` files sharing ids "
                        "(retrieval)")
    p.add_argument("--langs", default=None,
                   help="comma-separated languages (file stems, e.g. de,fr,zh-CN); "
                        "default: every language in the given directories")
    p.add_argument("--pivot", default="en-US", help="retrieval pivot language (default: en-US)")
    p.add_argument("--layer", default=None,
                   help="layer whose mean-pooled states embed sentences: 0..num_layers or 'last' "
                        "(default: 2/3 of the depth, layer 8 of 12 as in OFA's SR-B)")
    p.add_argument("--max-sequences", type=int, default=32,
                   help="MLM sequences per language (default 32; 0 = the whole file)")
    p.add_argument("--max-pairs", type=int, default=200,
                   help="retrieval pairs per language (default 200; 0 = all)")
    p.add_argument("--seq-len", type=int, default=128, help="MLM sequence length (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="MLM batch size (default 16)")
    p.add_argument("--seed", type=int, default=0, help="masking seed (default 0)")
    p.add_argument("--pppl", action="store_true",
                   help="also pseudo-perplexity (one forward row per token: slow)")
    p.add_argument("--pppl-sequences", type=int, default=4,
                   help="sequences per language scored for PPPL (default 4)")
    p.add_argument("--romanize", action="store_true",
                   help="romanise the text of every language except the pivot with uroman "
                        "first (to score a `jaxcpt vocab transliterate` model on transliterated "
                        "text)")
    p.add_argument("--backend", choices=("jaxcpt", "transformers"), default="jaxcpt",
                   help="who runs the forward passes: jaxcpt (default) or transformers' PyTorch "
                        "model of an HF directory (same texts, masks and scoring: the two agree)")
    p.add_argument("--out", default=None, help="write the results as JSON to this new file")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> None:
    from jaxcpt.eval.loading import load_eval_model
    from jaxcpt.eval.suite import EvalOptions, available_languages, evaluate, format_table

    out = pathlib.Path(args.out) if args.out else None
    if out is not None and out.exists():
        raise JaxcptError(f"{out}: already exists; choose a new results file")
    if args.mlm_dir is None and args.parallel_dir is None:
        raise JaxcptError("give --mlm-dir and/or --parallel-dir")
    for name in ("max_sequences", "max_pairs", "pppl_sequences"):
        if getattr(args, name) < 0:
            raise JaxcptError(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("seq_len", "batch_size"):
        if getattr(args, name) < 1:
            raise JaxcptError(f"--{name.replace('_', '-')} must be >= 1")
    dirs = [pathlib.Path(d) for d in (args.mlm_dir, args.parallel_dir) if d is not None]
    for d in dirs:
        if not d.is_dir():
            raise JaxcptError(f"{d}: no such directory (expected <language>.tsv files)")
    if args.langs:
        langs = [lang.strip() for lang in args.langs.split(",") if lang.strip()]
    else:
        langs = sorted(set.intersection(*(set(available_languages(d)) for d in dirs)))
        if args.mlm_dir is None:  # the pivot alone has nothing to report
            langs = [lang for lang in langs if lang != args.pivot]
    em = load_eval_model(args.model)
    if args.backend == "transformers":
        em = _transformers_backend(em)
    layer = args.layer
    if layer is not None:
        if layer == "last":
            layer = em.num_layers
        elif layer.lstrip("-").isdigit():
            layer = int(layer)
        else:
            raise JaxcptError(f"--layer {layer!r}: expected an integer or 'last'")
    options = EvalOptions(seq_len=args.seq_len, max_sequences=args.max_sequences or None,
                          batch_size=args.batch_size, seed=args.seed, pppl=args.pppl,
                          pppl_sequences=args.pppl_sequences, layer=layer,
                          max_pairs=args.max_pairs or None, pivot=args.pivot,
                          romanize=args.romanize)
    results = evaluate(em, langs, mlm_dir=args.mlm_dir, parallel_dir=args.parallel_dir,
                       options=options)
    print(format_table(results))
    if out is not None:
        try:   # atomic, and a file that appeared while evaluating is kept
            write_json(out, results, overwrite=False, parents=True)
        except OutputExistsError:
            raise JaxcptError(f"{out}: appeared while evaluating; not overwritten") from None
        print(f"wrote {out}")


def _transformers_backend(em):
    """The same EvalModel with transformers' PyTorch model doing the forward passes."""
    import dataclasses

    from jaxcpt.checkpoints.model_checkpoint import is_checkpoint
    from jaxcpt.eval.torch_peer import TorchPeer

    if is_checkpoint(em.source) or not em.has_head:
        raise JaxcptError(f"{em.source}: --backend transformers needs an HF directory with an "
                          "MLM head (export a jaxcpt checkpoint with `jaxcpt export` first)")
    return dataclasses.replace(em, model=TorchPeer(em.source))
