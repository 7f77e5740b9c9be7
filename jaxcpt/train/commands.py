"""`jaxcpt train --gin_file=F [--gin.KEY=VALUE ...]`: gin binds only `train` and config dataclasses.

This is the only module that imports gin (t5x's rule: configure the top, keep the library
gin-free). The gin configs ship with the package (jaxcpt/gin/ in a wheel; the repository's gin/ in a
checkout), and gin files and includes are resolved against them, so `--gin_file=gin/runs/X.gin`,
`include 'gin/models/xlmr_tiny.gin'` and `include 'models/xlmr_tiny.gin'` work from any working
directory. The effective config is written to MODEL_DIR/config.gin before training starts.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib

from jaxcpt.errors import JaxcptError


def _gin_dir() -> pathlib.Path:
    """The shipped gin configs: jaxcpt/gin/ in an installed wheel (package data, see
    pyproject.toml), else the top-level gin/ of the checkout this module runs from (an editable
    install). Never site-packages/gin: that is gin-config itself."""
    package = pathlib.Path(__file__).resolve().parents[1]
    shipped, checkout = package / "gin", package.parent / "gin"
    if not shipped.is_dir() and (checkout / "runs").is_dir() \
            and (package.parent / "pyproject.toml").is_file():
        return checkout
    return shipped


GIN_DIR = _gin_dir()


def resolve_gin_file(name: str) -> pathlib.Path | None:
    """A gin file named on the command line: a real path (the user's own file) first, then
    `gin/...` or `...` within the shipped configs."""
    for path in (pathlib.Path(name), GIN_DIR.parent / name, GIN_DIR / name):
        if path.is_file():
            return path
    return None


def _register() -> None:
    import gin

    from jaxcpt.models import LlamaConfig, T5Config, XLMRConfig
    from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
    from jaxcpt.train.config import DataConfig, TrainConfig
    from jaxcpt.train.optimizer import OptimizerConfig
    from jaxcpt.sharding import MeshConfig

    global _REGISTERED
    if _REGISTERED:
        return
    for cls in (TrainConfig, DataConfig, OptimizerConfig, MeshConfig, CheckpointConfig,
                XLMRConfig, T5Config, LlamaConfig):
        gin.external_configurable(cls, module="jaxcpt")
    _REGISTERED = True


_REGISTERED = False
_SEARCH_PATHS: set[str] = set()  # gin keeps its search paths across clear_config(): add once


def parse_gin(files: list[str], bindings: list[str]):
    """Parse gin files + bindings; returns the TrainConfig they build. One-line errors."""
    import gin

    _register()
    gin.clear_config()
    for prefix in (str(GIN_DIR), str(GIN_DIR.parent)):  # `models/x.gin`, `gin/models/x.gin`
        if prefix not in _SEARCH_PATHS:
            gin.add_config_file_search_path(prefix)
            _SEARCH_PATHS.add(prefix)
    paths = []
    for name in files:
        path = resolve_gin_file(name)
        if path is None:
            raise JaxcptError(f"{name}: gin file not found (looked in the working directory "
                              f"and in {GIN_DIR})")
        paths.append(str(path))
    try:
        with _quiet_include_search():
            gin.parse_config_files_and_bindings(paths, bindings)
        from jaxcpt.train.config import TrainConfig

        return gin.get_configurable(TrainConfig)()
    except JaxcptError:
        raise
    except Exception as err:  # gin raises ValueError/SyntaxError/KeyError/TypeError with context
        message = " ".join(str(err).split())
        raise JaxcptError(f"gin config ({', '.join(files) or 'bindings'}): {message[:400]}") from None


class _DropGinSearchMisses(logging.Filter):
    """gin logs `ERROR:root:Path not found` for every search path an include is *not* under
    before it finds it; a missing include still fails with gin's own error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found")


@contextlib.contextmanager
def _quiet_include_search():
    root, quiet = logging.getLogger(), _DropGinSearchMisses()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


GUARD_EXIT_CODE = 3


def cmd_train(args, gin_bindings: list[str]) -> int:
    import gin

    from jaxcpt.train.loop import train

    config = parse_gin(args.gin_file, gin_bindings)
    initialize_distributed(args.distributed)
    import jax

    from jaxcpt.console import native_stderr_silenced

    with (contextlib.nullcontext() if getattr(args, "verbose", False)
          else native_stderr_silenced()):
        jax.devices()   # the backend's start-up logging (e.g. CUDA probing on CPU) stays hidden
    model_dir = config.model_dir
    if args.dry_run:
        from jaxcpt.train.plan import describe_plan

        print(describe_plan(config, num_devices=args.devices))
        return 0
    # The effective config is written once the run directory is known to be ours.
    summary = train(config, run_files={"config.gin": gin.config_str()})
    print(final_message(summary, model_dir, config.steps), flush=True)
    return GUARD_EXIT_CODE if summary.get("guard_stopped") else 0


def final_message(summary: dict, model_dir: str, steps: int) -> str:
    if summary["final_step"] is None:  # preempted during start-up (already said)
        return "jaxcpt train: exiting before the first step; run again to start"
    where = f"checkpoints in {model_dir}/checkpoints"
    if summary["final_step"] == summary["start_step"] and not summary["preempted"]:
        return f"jaxcpt train: nothing to do: the run is already at step {steps}; {where}"
    last = summary["history"][-1]["loss"] if summary["history"] else None
    loss = f" (last loss {last:.4f})" if last is not None else ""
    verb = ("preempted at" if summary["preempted"] else
            "stopped by the regression guard at" if summary.get("guard_stopped") else "finished")
    return f"jaxcpt train: {verb} step {summary['final_step']}{loss}; {where}"


def initialize_distributed(mode: str) -> None:
    """Multi-host: every process calls jax.distributed.initialize() before touching devices.

    `auto` initialises on a multi-host TPU slice (TPU_WORKER_HOSTNAMES lists more than one host;
    jax finds the coordinator itself) or when JAXCPT_COORDINATOR=host:port, JAXCPT_NUM_PROCESSES
    and JAXCPT_PROCESS_ID are set (any cluster, or several CPU processes on one machine).
    """
    import os

    import jax

    if mode == "off":
        return
    coordinator = os.environ.get("JAXCPT_COORDINATOR")
    if coordinator:
        jax.distributed.initialize(coordinator, int(os.environ["JAXCPT_NUM_PROCESSES"]),
                                   int(os.environ["JAXCPT_PROCESS_ID"]))
    elif mode == "on" or len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
        jax.distributed.initialize()


def add_commands(sub) -> None:
    p = sub.add_parser(
        "train", help="continued pretraining configured by gin (resumes from MODEL_DIR)",
        description="Train with gin configs: --gin_file gin/adapt/X.gin "
                    "--gin.MODEL_DIR=\"'/path/run'\" [--gin.TrainConfig.steps=100 ...]")
    p.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                   help="gin file (repeatable; includes resolve against gin/)")
    p.add_argument("--dry-run", action="store_true",
                   help="build the config under an abstract mesh and print the sharding plan, "
                        "parameter counts and memory per device; no training")
    p.add_argument("--devices", type=int, default=None,
                   help="with --dry-run: plan for this many devices (default: the local count)")
    p.add_argument("--distributed", choices=("auto", "on", "off"), default="auto",
                   help="jax.distributed.initialize(): auto = on a multi-host TPU slice or when "
                        "JAXCPT_COORDINATOR/JAXCPT_NUM_PROCESSES/JAXCPT_PROCESS_ID are set")
    p.set_defaults(func=cmd_train, accepts_gin=True)


def split_gin_bindings(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate `--gin.KEY=VALUE` (or `--gin.KEY VALUE`) from the other arguments."""
    rest, bindings, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--gin.") and arg != "--gin_file":
            key, eq, value = arg[len("--gin."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise JaxcptError(f"{arg}: missing value (use --gin.KEY=VALUE)")
                value, i = argv[i + 1], i + 1
            bindings.append(f"{key} = {value}")
        else:
            rest.append(arg)
        i += 1
    return rest, bindings
