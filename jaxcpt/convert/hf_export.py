"""jaxcpt model (in memory, a jaxcpt checkpoint, or a training run) -> Hugging Face directory.

`save_hf` writes a directory transformers loads; a factorized model is multiplied out (F·P) into
a standard dense embedding unless `keep_factors=True`, which writes F and P into
`hf_files.FACTORS_FILE` (not model.safetensors), a directory only jaxcpt loads. `export` is
`jaxcpt export`: it finds the model and tokenizer of a checkpoint or run directory first.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
from flax import nnx

from jaxcpt.convert import hf_files
from jaxcpt.convert.params import get_path, map_tree, set_path
from jaxcpt.errors import JaxcptError
from jaxcpt.families import family_of
from jaxcpt.files import fresh_output_dir


def export_tensors(model: nnx.Module, *, keep_factors: bool = False) -> tuple[dict, Any]:
    """(HF tensor dict, config used for export) of a model; factors multiplied out by default."""
    family = family_of(model)
    cfg = model.config
    params = map_tree(nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                       lambda x: np.asarray(x, np.float32))
    if cfg.num_primitives is not None and not keep_factors:
        word = get_path(params, family.word_embedding_path)
        set_path(params, family.word_embedding_path,
                  {"embedding": word["coordinates"] @ word["primitives"]})
        cfg = cfg.replace(num_primitives=None)
    tensors = {family.hf_prefix(spec.hf_name): np.ascontiguousarray(spec.to_hf(get_path(params, spec.path)))
               for spec in family.tensor_specs(cfg)}
    return tensors, cfg


def save_hf(model: nnx.Module, path, tokenizer=None, *, keep_factors: bool = False) -> pathlib.Path:
    """Write an HF directory (config.json, model.safetensors, tokenizer files) transformers loads.

    `tokenizer`: a directory holding tokenizer files, or a transformers tokenizer object.
    """
    family = family_of(model)
    path = pathlib.Path(path)
    tensors, cfg = export_tensors(model, keep_factors=keep_factors)
    with fresh_output_dir(path) as tmp:
        hf_config = family.config_to_hf(cfg, keep_factors)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        hf_files.write_tensors(tmp, tensors, factorized=cfg.num_primitives is not None)
        write_tokenizer(tokenizer, tmp)
    return path


def write_tokenizer(tokenizer, dest: pathlib.Path) -> None:
    if tokenizer is None:
        return
    if isinstance(tokenizer, (str, pathlib.Path)):
        if not hf_files.copy_tokenizer_files(pathlib.Path(tokenizer), dest):
            raise JaxcptError(f"{tokenizer}: no tokenizer files found (tokenizer.json, "
                              "sentencepiece.bpe.model, spiece.model, ...)")
    else:
        tokenizer.save_pretrained(str(dest))


def export(source, hf_out, *, tokenizer=None, keep_factors: bool = False) -> str:
    """Export a jaxcpt checkpoint or a training run's MODEL_DIR (its last checkpoint) to
    `hf_out`; returns a one-line description of what was written."""
    from jaxcpt.checkpoints.model_checkpoint import load_checkpoint, tokenizer_dir
    from jaxcpt.train.state import config_from_run_file, is_run_dir, run_model

    dropped = ""
    if is_run_dir(source):
        model, own_tokenizer = run_model(source)
        what = f"the last checkpoint of run {source}"
        if getattr(config_from_run_file(pathlib.Path(source)), "langsamp_languages", 0):
            dropped = " (LangSAMP embeddings left out)"
        if (tokenizer or own_tokenizer) is None:
            raise JaxcptError(f"{source}: the run recorded no tokenizer; pass --tokenizer "
                              "DIR (the HF tokenizer it trained with)")
    else:
        model, own_tokenizer = load_checkpoint(source), tokenizer_dir(source)
        what = str(source)
    save_hf(model, hf_out, tokenizer=tokenizer or own_tokenizer, keep_factors=keep_factors)
    return f"exported {what} -> {hf_out}{' (factors kept)' if keep_factors else ''}{dropped}"
