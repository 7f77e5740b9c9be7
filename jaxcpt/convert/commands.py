"""CLI: `jaxcpt convert` (HF directory -> jaxcpt checkpoint) and `jaxcpt export` (jaxcpt
checkpoint or training run -> HF directory)."""

from __future__ import annotations

import pathlib

from jaxcpt.errors import JaxcptError


def cmd_convert(args) -> None:
    from jaxcpt.checkpoints.model_checkpoint import save_checkpoint, tokenizer_vocab_size
    from jaxcpt.convert.hf_files import has_tokenizer
    from jaxcpt.convert.hf_import import load_hf
    from jaxcpt.files import ensure_new_dir

    source = pathlib.Path(args.hf_dir)
    ensure_new_dir(pathlib.Path(args.out_dir))
    model = load_hf(source, init_missing_head=args.init_head)
    pieces = tokenizer_vocab_size(source)
    if pieces is not None and pieces > model.config.vocab_size:
        raise JaxcptError(f"{source}: its tokenizer has {pieces} pieces but the model has "
                          f"{model.config.vocab_size} vocabulary rows (config.json vocab_size); "
                          "use the model's own tokenizer files, or give the model rows for the "
                          "new pieces with `jaxcpt init-embeddings`")
    save_checkpoint(model, args.out_dir, tokenizer=source if has_tokenizer(source) else None)
    print(f"converted {source} -> {args.out_dir} ({model.config.model_type}, "
          f"vocab {model.config.vocab_size}, k={model.config.num_primitives or 'dense'})")


def cmd_export(args) -> None:
    from jaxcpt.convert.hf_export import export

    print(export(args.ckpt_dir, args.hf_out, tokenizer=args.tokenizer,
                 keep_factors=args.keep_factors))


def add_commands(sub) -> None:
    p = sub.add_parser("convert", help="Hugging Face model directory -> jaxcpt checkpoint")
    p.add_argument("hf_dir", metavar="HF_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new directory (must not exist or be empty)")
    p.add_argument("--init-head", action="store_true",
                   help="accept a checkpoint without an MLM head and initialise a fresh one")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="jaxcpt checkpoint or training run -> Hugging Face model "
                                      "directory")
    p.add_argument("ckpt_dir", metavar="CKPT_DIR",
                   help="a jaxcpt checkpoint (`jaxcpt convert`, `init-embeddings --format "
                        "jaxcpt`) or a training run's MODEL_DIR (its last checkpoint)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="HF tokenizer directory to write beside the model (default: the "
                        "checkpoint's, or the one the run trained with)")
    p.add_argument("hf_out", metavar="HF_OUT", help="new directory (must not exist or be empty)")
    p.add_argument("--keep-factors", action="store_true",
                   help="write OFA coordinates/primitives (+ num_primitives) instead of F·P; "
                        "only jaxcpt reads such a directory")
    p.set_defaults(func=cmd_export)
