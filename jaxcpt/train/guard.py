"""The regression guard: continued pretraining must not cost the languages the model knew.

Before the first step of a run the held-out loss of each guarded language (by default the
replay languages) is measured once and kept in MODEL_DIR/guard_baseline.json; every later
evaluation reports each language's relative rise over it (`guard/<lang>` in TensorBoard, the
console and MODEL_DIR/eval.jsonl) and, past `guard_max_rise`, warns or stops the run (a
checkpoint of the step is saved, then `jaxcpt train` exits 3).
"""

from __future__ import annotations

import dataclasses
import json
import sys

from etils import epath

from jaxcpt.errors import JaxcptError
from jaxcpt.files import write_json

BASELINE_FILE = "guard_baseline.json"
ACTIONS = ("warn", "stop")


@dataclasses.dataclass
class Verdict:
    rises: dict[str, float]      # language -> relative held-out loss rise over the baseline
    exceeded: dict[str, float]   # the languages past the limit

    def message(self, step: int, limit: float) -> str:
        worst = ", ".join(f"{lang} {rise:+.1%}" for lang, rise in self.exceeded.items())
        return (f"step {step}: held-out loss of the source language(s) rose past the guard's "
                f"limit of {limit:.1%}: {worst}")


class RegressionGuard:
    def __init__(self, model_dir, languages: tuple[str, ...], task_of: dict[str, str],
                 max_rise: float, action: str):
        if action not in ACTIONS:
            raise JaxcptError(f"TrainConfig.guard_action={action!r}: use warn or stop")
        if not max_rise > 0:
            raise JaxcptError(f"TrainConfig.guard_max_rise={max_rise!r}: must be > 0 (a relative "
                              "rise, e.g. 0.02 for 2%)")
        if not languages:
            raise JaxcptError("TrainConfig.guard_max_rise is set but no language is guarded: set "
                              "TrainConfig.guard_languages or DataConfig.replay_languages")
        self.path = epath.Path(model_dir) / BASELINE_FILE
        self.languages, self.task_of = languages, task_of
        self.max_rise, self.action = max_rise, action
        self.baseline: dict[str, float] | None = None
        if self.path.exists():
            stored = json.loads(self.path.read_text())
            if set(stored["loss"]) == set(languages):
                self.baseline = stored["loss"]

    def eval_keys(self) -> dict[str, str]:
        return {lang: f"{self.task_of[lang]}/loss" for lang in self.languages}

    def needs_baseline(self) -> bool:
        return self.baseline is None

    def set_baseline(self, step: int, evals: dict[str, float], write: bool) -> None:
        self.baseline = {lang: evals[key] for lang, key in self.eval_keys().items()}
        if write:
            write_json(self.path, {"step": step, "loss": self.baseline})   # atomic: read on resume
        shown = "  ".join(f"{lang} {loss:.4f}" for lang, loss in self.baseline.items())
        print(f"guard baseline (step {step}): {shown}", flush=True)

    def check(self, evals: dict[str, float]) -> Verdict:
        rises = {lang: evals[key] / self.baseline[lang] - 1.0
                 for lang, key in self.eval_keys().items()}
        return Verdict(rises, {lang: r for lang, r in rises.items() if r > self.max_rise})

    def report(self, step: int, verdict: Verdict) -> bool:
        """Console line (+ warning); True when the run must stop."""
        shown = "  ".join(f"{lang} {rise:+.2%}" for lang, rise in verdict.rises.items())
        print(f"guard (limit {self.max_rise:.1%}): {shown}", flush=True)
        if not verdict.exceeded:
            return False
        if self.action == "warn":
            print(f"jaxcpt train: warning: {verdict.message(step, self.max_rise)}",
                  file=sys.stderr, flush=True)
            return False
        return True
