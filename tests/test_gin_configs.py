"""Every gin file parses and builds (pod configs under an abstract mesh of their shape), and bad
gin input is a one-line error with exit status 2."""

import pathlib
import re

import pytest

from helpers import tiny_hf_xlmr
from jaxcpt.cli import main as cli
from jaxcpt.train.commands import parse_gin
from jaxcpt.train.plan import build_plan

GIN = pathlib.Path(__file__).resolve().parents[1] / "gin"
TINY_VOCAB = ["VOCAB_SIZE = 300"]


def _companions(rel: str) -> list[str]:
    """Fragments (a model, an objective, a mesh, the run defaults) are built with the rest."""
    kind = rel.split("/")[0]
    t5 = ("t5" in rel and "llama" not in rel) or "span" in rel or "ul2" in rel
    decoder = any(name in rel for name in ("llama", "qwen", "smollm", "causal"))
    model = ("gin/models/llama_tiny.gin" if decoder else
             "gin/models/t5_tiny.gin" if t5 else "gin/models/xlmr_tiny.gin")
    objective = ("gin/objectives/causal_lm.gin" if decoder else
                 "gin/objectives/span_corruption.gin" if t5 else "gin/objectives/mlm.gin")
    parts = {"models": ["gin/runs/cpt.gin", objective, "gin/partitioning/dp.gin"],
             "objectives": ["gin/runs/cpt.gin", model, "gin/partitioning/dp.gin"],
             "partitioning": ["gin/runs/cpt.gin", model, objective]}
    if rel == "runs/cpt.gin":
        return [model, objective, "gin/partitioning/dp.gin"]
    if kind == "recipes":  # composed after an adaptation
        return ["gin/adapt/demo_languages.gin"]
    return parts.get(kind, [])


ALL = sorted(str(p.relative_to(GIN)) for p in GIN.rglob("*.gin"))


def test_the_required_files_exist():
    for rel in ("models/xlmr_base.gin", "models/xlmr_large.gin", "models/mt5_small.gin",
                "models/mt5_base.gin", "objectives/ul2.gin", "partitioning/fsdp_tp.gin",
                "runs/cpt.gin", "runs/debug_cpu.gin", "adapt/demo_languages.gin"):
        assert rel in ALL
    assert len([r for r in ALL if r.startswith("adapt/")]) >= 3


@pytest.mark.parametrize("rel", ALL)
def test_every_gin_file_parses_and_builds(rel, tmp_path):
    tiny_hf_xlmr(tmp_path / "init")
    bindings = [f"MODEL_DIR = '{tmp_path / 'run'}'", f"INIT_FROM = '{tmp_path / 'init'}'",
                f"CORPUS_DIR = '{tmp_path}'", "REPLAY_LANGUAGES = ('en-US',)"]
    if rel.startswith(("models/xlmr_tiny", "models/t5_tiny", "models/llama_tiny", "objectives",
                       "partitioning")) \
            or rel == "runs/cpt.gin":
        bindings += TINY_VOCAB
    files = [*(_companions(rel)), f"gin/{rel}"]
    config = parse_gin(files, bindings)
    header = re.search(r"#\s*devices:\s*(\d+)", (GIN / rel).read_text())
    devices = int(header.group(1)) if header else 8
    plan = build_plan(config, num_devices=devices)
    assert plan.num_params > 0
    if rel.startswith("pods/"):
        assert plan.bytes_per_device < 0.5 * plan.num_params * 16  # really sharded
        total = 1
        for size in plan.mesh_shape.values():
            total *= size
        assert total == devices


def test_large_configs_have_their_published_sizes(tmp_path):
    sizes = {"models/xlmr_base.gin": 278e6, "models/xlmr_large.gin": 560e6,
             "models/mt5_base.gin": 580e6, "models/mt5_small.gin": 300e6}
    for rel, expected in sizes.items():
        config = parse_gin(["gin/runs/cpt.gin", f"gin/{rel}"], [f"MODEL_DIR = '{tmp_path}'"])
        plan = build_plan(config, num_devices=8)
        assert abs(plan.num_params - expected) / expected < 0.03, (rel, plan.num_params)


@pytest.mark.parametrize("case, args, message", [
    ("malformed", ["--gin_file={bad}"], "gin config"),
    ("unknown binding", ["--gin_file=gin/runs/debug_cpu.gin", "--gin.MODEL_DIR='{out}'",
                         "--gin.TrainConfig.no_such_field=3"], "no_such_field"),
    ("impossible mesh", ["--gin_file=gin/runs/debug_cpu.gin", "--gin.MODEL_DIR='{out}'",
                         "--gin.jaxcpt.MeshConfig.data=3", "--dry-run", "--devices=8"],
     "needs 3 devices but 8 are available"),
    ("missing file", ["--gin_file=gin/nope.gin"], "gin file not found"),
    ("mesh at train time", ["--gin_file=gin/runs/debug_cpu.gin", "--gin.MODEL_DIR='{out}'",
                            "--gin.jaxcpt.MeshConfig.data=3"], "needs 3 devices"),
])
def test_bad_gin_input_is_one_line_exit_2(tmp_path, capsys, case, args, message):
    bad = tmp_path / "bad.gin"
    bad.write_text("TrainConfig.steps = = 3\n")
    out = tmp_path / "out"
    argv = ["train", *(a.format(bad=bad, out=out) for a in args)]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not out.exists()
