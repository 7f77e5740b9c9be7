"""The demo's report writer and stage reuse on tiny fake inputs (no model, no training)."""

import json

from jaxcpt.demo.run import StageTimer
from jaxcpt.demo.stages import training_curve
from jaxcpt.files import write_json
from jaxcpt.demo.report import UNADAPTED, DemoResults, wins, write_report

LANGS = ("de", "ru", "ja")


def _results(losses, retrieval):
    langs = {lang: {"loss": lo, "accuracy": 0.1, "mean": r}
             for lang, lo, r in zip(LANGS, losses, retrieval)}
    average = {k: sum(row[k] for row in langs.values()) / len(langs)
               for k in ("loss", "accuracy", "mean")}
    return {"languages": langs, "average": average, "layer": 12,
            "options": {"max_sequences": 4, "seq_len": 128, "max_pairs": 100}}


def _demo():
    results = {UNADAPTED: _results([9.0, 9.5, 9.9], [0.01, 0.02, 0.0]),
               "ofa-100 step 0": _results([5.0, 7.0, 6.0], [0.30, 0.10, 0.20]),
               "ofa-384 step 0": _results([5.5, 6.5, 6.0], [0.30, 0.20, 0.20]),
               "random step 0": _results([8.0, 6.0, 9.0], [0.20, 0.20, 0.10]),
               "ofa-100 step 5": _results([4.0, 5.0, 5.0], [0.40, 0.20, 0.30]),
               "random step 5": _results([4.5, 5.5, 4.0], [0.30, 0.30, 0.20])}
    curve = [{"step": s, "loss": 8.0 - s} for s in range(1, 6)]
    return DemoResults(
        langs=LANGS, steps=5, full=False,
        warmup={"steps": 400, "heldout_accuracy": 0.157, "heldout_loss": 6.29,
                "heldout_accuracy_before": 0.0},
        results=results, curves={"ofa-100": curve, "random": curve},
        export={"export_dir": "x/export", "max_abs_logit_diff": 1e-5},
        timings=[{"stage": "extend", "seconds": 4.0, "cpu_seconds": 7.5, "reused": False},
                 {"stage": "train", "seconds": None, "reused": True}],
        total_seconds=12.0, vocab={"added_pieces": 100, "merged_hf_vocab_size": 1000})


def test_wins_counts_languages_per_direction():
    demo = _demo()
    # losses ofa-100 vs random at step 0: 5<8, 7<6 no, 6<9 → 2 of 3
    assert wins(demo, "ofa-100 step 0", "random step 0", "loss", True) == (2, 3)
    # retrieval ofa ≥ random at step 5: .4≥.3, .2≥.3 no, .3≥.2 → 2 of 3
    assert wins(demo, "ofa-100 step 5", "random step 5", "mean", False) == (2, 3)


def test_report_has_tables_summary_plot_and_docs_copy(tmp_path):
    out, docs = tmp_path / "run", tmp_path / "docs"
    out.mkdir()
    report = write_report(out, _demo(), docs=docs)
    text = report.read_text()
    assert "| ru | 9.50 | 7.00 | 6.50 | 6.00 | 5.00 | 5.50 |" in text  # MLM loss row
    assert "| **average** | 0.010 | 0.200 | 0.233 | 0.167 | 0.300 | 0.267 |" in text  # retrieval
    assert "OFA < random in held-out MLM loss for 2 of 3 new languages" in text
    assert "after CPT (step 5): OFA < random in held-out MLM loss for 2 of 3" in text
    assert "| train | – (reused) | – |" in text and "| extend | 4.0 | 7.5 |" in text
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (docs / "demo_loss.png").read_bytes() == (out / "loss_curves.png").read_bytes()
    assert "![loss curves](demo_loss.png)" in (docs / "demo_report.md").read_text()


def test_stage_timer_skips_finished_stages_and_keeps_their_time(tmp_path):
    calls = []
    output = tmp_path / "stage.json"
    for _ in range(2):
        timer = StageTimer(tmp_path)
        with timer.stage("make", output) as run:
            if run:
                calls.append(1)
                write_json(output, {"ok": True})
    assert calls == [1]  # second invocation reused the output
    assert timer.rows[0]["reused"] and timer.rows[0]["seconds"] is not None
    assert timer.rows[0]["cpu_seconds"] is not None
    assert json.loads(output.read_text()) == {"ok": True}


def test_training_curve_keeps_last_row_per_step_after_resume(tmp_path):
    rows = [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 8.0}, {"step": 2, "loss": 7.5},
            {"step": 3, "loss": 7.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["loss"] for r in training_curve(tmp_path)] == [9.0, 7.5, 7.0]


def test_demo_dir_of_other_languages_is_refused(tmp_path):
    import pytest

    from jaxcpt.demo.run import check_settings
    from jaxcpt.errors import JaxcptError

    check_settings(tmp_path / "settings.json", {"languages": ["de"]})
    check_settings(tmp_path / "settings.json", {"languages": ["de"]})  # same: fine
    with pytest.raises(JaxcptError, match="use another --out"):
        check_settings(tmp_path / "settings.json", {"languages": ["ru"]})
