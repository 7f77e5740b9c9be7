"""The `jaxcpt` command line. Every command's bad input ends in a one-line error and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxcpt import console
from jaxcpt.errors import JaxcptError


# Modules that add their own subcommands: each defines `add_commands(subparsers)` and keeps its
# heavy imports inside the command functions, so `jaxcpt --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "jaxcpt.convert.commands", "jaxcpt.demo.commands", "jaxcpt.train.commands",
    "jaxcpt.eval.commands", "jaxcpt.vocab.commands", "jaxcpt.wordvecs.commands",
    "jaxcpt.init.commands", "jaxcpt.data.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcpt", description="Multilingual continued pretraining in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    _add_verbose(parser)
    return parser


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
        console.quiet_startup(args.command)
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
