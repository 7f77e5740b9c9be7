"""The stages of `jaxcpt demo`, each a thin composition of library calls writing one output.

Every stage writes its output atomically (a directory through `jaxcpt.files.fresh_output_dir`, a
file through `jaxcpt.files.write_json`), so "the output exists" means "the stage finished" and a
re-run skips it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from jaxcpt.files import write_json

SOURCE_LANGS = ("en-US", "pt")
# Languages the source model already handled that the extension does not target: what CPT must
# not cost (en-US: MLM loss only, it is the retrieval pivot).
KNOWN_LANGS = ("en-US", "pt", "fr", "es")
KNOWN_MLM_FACTOR = 16
PIVOT = "en-US"
LAYER = 12  # the last layer of multilingual-e5-small
RETRIEVAL_MAX_LENGTH = 128
SUMMARY_FILE = "demo_summary.json"  # written into a training run dir once train() returned


def extend_stage(model_dir, corpus, langs, vocab_size: int, out: pathlib.Path) -> None:
    from jaxcpt.vocab import extend_vocabulary

    extend_vocabulary(model_dir, corpus, list(langs), vocab_size, out,
                      protect_langs=SOURCE_LANGS, seed=0)


def wordvec_stage(corpus, langs, tokenizer_dir, out: pathlib.Path) -> None:
    """Cross-lingual piece vectors from the training split, keyed by the merged tokenizer's pieces
    (so OFA finds a vector for most new pieces)."""
    from jaxcpt.wordvecs.build import build_word_vectors

    vectors = build_word_vectors(corpus, [*SOURCE_LANGS, *langs], dim=200,
                                 tokenizer_dir=tokenizer_dir)
    vectors.save(out)


def init_stage(model_dir, tokenizer_dir, out: pathlib.Path, method: str, dim: int | None,
               word_vectors) -> None:
    from jaxcpt.init.model_init import init_embeddings_checkpoint

    stats = init_embeddings_checkpoint(
        model_dir, tokenizer_dir, out, method=method, dim=dim,
        word_vectors=word_vectors if method == "ofa" else None,
        exclude_special_neighbors=True, fmt="hf", keep_factors=True, seed=0)
    shown = {k: stats[k] for k in ("method", "k", "target_tokens") if k in stats}
    print(f"   init {shown}", flush=True)


def train_stage(init_dir: pathlib.Path, run_dir: pathlib.Path, langs, steps: int, full: bool,
                learning_rate: float, seed: int = 0, recipe: dict | None = None) -> dict:
    """Continued pretraining from `init_dir` (resumes an interrupted run in `run_dir`).

    `recipe`: TrainConfig fields (e.g. trainable="new_rows", guard_max_rise) plus the replay
    fields of DataConfig (replay_languages, replay_share)."""
    import dataclasses

    from jaxcpt.checkpoints.run_checkpoints import CheckpointConfig
    from jaxcpt.train.config import DataConfig, TrainConfig
    from jaxcpt.train.loop import train
    from jaxcpt.train.optimizer import OptimizerConfig

    cfg = TrainConfig(
        model_dir=str(run_dir), steps=steps, init_from=str(init_dir),
        data=DataConfig(mixture="demo_cpt", corpus_dir="shipped:libreoffice_help",
                        languages=tuple(langs), sequence_length=128, batch_size=16,
                        eval_heldout=False, seed=seed),  # the demo's eval stages do that
        optimizer=OptimizerConfig(learning_rate=learning_rate, warmup_steps=min(8, max(steps // 4, 1))),
        checkpoint=CheckpointConfig(every_steps=steps, keep=1, async_save=False),
        dtype="float32", dropout=False, trainable="all" if full else "embeddings_and_head",
        log_every=10, seed=seed, tensorboard=True)
    recipe = dict(recipe or {})
    data_fields = {k: recipe.pop(k) for k in ("replay_languages", "replay_share") if k in recipe}
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_fields), **recipe)
    summary = train(cfg)
    kept = {"final_step": summary["final_step"], "eval": summary["eval"],
            "trainable": cfg.trainable, "steps": steps, "learning_rate": learning_rate,
            "languages": list(langs), "replay_languages": list(cfg.data.replay_languages),
            "replay_share": cfg.data.replay_share}
    write_json(run_dir / SUMMARY_FILE, kept, parents=True, default=float)
    return kept


def training_curve(run_dir: pathlib.Path) -> list[dict]:
    """Per-step rows of a run's metrics.jsonl (a resumed run appended: the last row per step wins)."""
    rows: dict[int, dict] = {}
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[int(row["step"])] = row
    return [rows[s] for s in sorted(rows)]


def trained_model(run_dir: pathlib.Path):
    """The model of `run_dir` with the parameters of its last checkpoint."""
    from jaxcpt.train.state import run_model

    return run_model(run_dir)[0]


def eval_stage(model, tokenizer, langs, corpus: pathlib.Path, out: pathlib.Path,
               max_sequences: int, max_pairs: int, max_length: int = RETRIEVAL_MAX_LENGTH) -> dict:
    """Held-out MLM loss/accuracy and retrieval against English (layer 12, the last: e5 is a
    retrieval model trained on its last layer) on subsets of the held-out split.

    The same metrics as `jaxcpt.eval.evaluate`, with retrieval texts cut to `max_length` tokens
    (held-out paragraphs run to 512 tokens; the cut keeps the demo inside its time budget)."""
    import sys
    import time

    from jaxcpt.eval import EvalModel, EvalOptions
    from jaxcpt.eval import retrieval, suite

    em = EvalModel(model, tokenizer, has_head=True, source=None)
    options = EvalOptions(max_sequences=max_sequences, batch_size=max_sequences,
                          max_pairs=max_pairs, layer=LAYER, pivot=PIVOT)
    # What CPT must not cost is judged on 16× more masked positions (4 sequences give ~76: too
    # few to see a 2% change of the English loss).
    known_options = dataclasses.replace(options, max_sequences=KNOWN_MLM_FACTOR * max_sequences)
    heldout = corpus / "heldout"
    embed = dict(layer=LAYER, batch_size=32, max_length=max_length, cache={})
    groups = {"languages": {}, "known_languages": {}}
    todo = [("languages", lang) for lang in langs] + [("known_languages", lang)
                                                      for lang in KNOWN_LANGS]
    for number, (group, lang) in enumerate(todo, start=1):
        started = time.time()
        row = suite.language_mlm(em, heldout / f"{lang}.tsv",
                                 known_options if group == "known_languages" else options, lang)
        if lang != PIVOT:
            _, x_texts, pivot_texts = retrieval.parallel_pairs(
                heldout / f"{lang}.tsv", heldout / f"{PIVOT}.tsv", max_pairs)
            row.update(retrieval.retrieval_scores(
                retrieval.embed_texts(model, tokenizer, x_texts, **embed),
                retrieval.embed_texts(model, tokenizer, pivot_texts, **embed)))
        groups[group][lang] = row
        print(f"   eval [{number}/{len(todo)}] {lang}: {suite.summary(row)}  "
              f"({time.time() - started:.1f}s)", file=sys.stderr, flush=True)
    results = {"layer": LAYER, "num_layers": em.num_layers, "pivot": PIVOT,
               "retrieval_max_length": max_length, "options": dataclasses.asdict(options),
               "languages": groups["languages"],
               "average": suite.macro_average(groups["languages"]),
               "known_languages": groups["known_languages"],
               "known_average": suite.macro_average(
                   {k: v for k, v in groups["known_languages"].items() if k != PIVOT})}
    write_json(out, results, parents=True, default=float)
    return results


def export_stage(model, tokenizer_dir: pathlib.Path, out: pathlib.Path, check: pathlib.Path,
                 tokenizer) -> dict:
    """Export to HF (factors multiplied out), reload with transformers, compare logits."""
    import torch
    from transformers import AutoModelForMaskedLM

    from jaxcpt.convert.hf_export import save_hf
    from jaxcpt.files import fresh_output_dir

    if not (out / "config.json").exists():  # an earlier invocation may have stopped after it
        with fresh_output_dir(out) as tmp:
            save_hf(model, tmp, tokenizer=tokenizer_dir)
    peer = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    batch = tokenizer(["Wählen Sie Format - Zeichen.", "Выберите команду Формат.",
                       "書式 - 文字 を選択します。"], padding=True, return_tensors="np")
    with torch.no_grad():
        theirs = peer(input_ids=torch.as_tensor(batch["input_ids"]),
                      attention_mask=torch.as_tensor(batch["attention_mask"])).logits.numpy()
    ours = np.asarray(model(batch["input_ids"], batch["attention_mask"]))
    valid = batch["attention_mask"].astype(bool)
    diff = float(np.abs(ours[:, :, :theirs.shape[-1]] - theirs)[valid].max())
    result = {"export_dir": str(out), "max_abs_logit_diff": diff,
              "vocab_size": int(peer.config.vocab_size)}
    write_json(check, result, parents=True, default=float)
    print(f"   transformers loads {out}: max |logit diff| {diff:.2e}", flush=True)
    return result
