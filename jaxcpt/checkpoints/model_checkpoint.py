"""The one on-disk jaxcpt checkpoint format: orbax params + `jaxcpt.json` (+ `tokenizer/`).

    CKPT_DIR/
      jaxcpt.json   {"format": "jaxcpt", "version": 1, "model_type", "config",
                     "num_primitives", "vocab_size", "padded_vocab_size",
                     "tokenizer_vocab_size", "tokenizer_path"}
      params/       orbax PyTree checkpoint of the parameter tree (nnx.to_pure_dict layout)
      tokenizer/    the HF tokenizer files (optional)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxcpt.convert import hf_files
from jaxcpt.convert.params import build_from_params
from jaxcpt.errors import JaxcptError
from jaxcpt.families import family_of, get_family
from jaxcpt.files import fresh_output_dir

FORMAT_VERSION = 1
METADATA_FILE = "jaxcpt.json"


def is_checkpoint(path) -> bool:
    return (pathlib.Path(path) / METADATA_FILE).is_file()


def tokenizer_vocab_size(tokenizer_dir: pathlib.Path) -> int | None:
    if not hf_files.has_tokenizer(tokenizer_dir):
        return None
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))


def save_checkpoint(model: nnx.Module, path, tokenizer=None) -> pathlib.Path:
    """Write `model` (and optionally its tokenizer: a directory or a transformers object)."""
    from jaxcpt.convert.hf_export import write_tokenizer

    family_of(model)  # refuse unknown model types before writing anything
    path = pathlib.Path(path).absolute()
    cfg = model.config
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with fresh_output_dir(path) as tmp:
        checkpointer = ocp.PyTreeCheckpointer()
        checkpointer.save(tmp / "params", params)
        tokenizer_path = None
        if tokenizer is not None:
            (tmp / "tokenizer").mkdir()
            write_tokenizer(tokenizer, tmp / "tokenizer")
            tokenizer_path = "tokenizer"
        metadata = {
            "format": "jaxcpt", "version": FORMAT_VERSION, "model_type": cfg.model_type,
            "config": dataclasses.asdict(cfg), "num_primitives": cfg.num_primitives,
            "vocab_size": cfg.vocab_size, "padded_vocab_size": cfg.padded_vocab_size,
            "tokenizer_vocab_size": tokenizer_vocab_size(tmp / "tokenizer")
            if tokenizer_path else None,
            "tokenizer_path": tokenizer_path,
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return path


def read_metadata(path) -> dict:
    file = pathlib.Path(path) / METADATA_FILE
    if not file.is_file():
        raise JaxcptError(f"{file}: missing; not a jaxcpt checkpoint (create one with "
                          "`jaxcpt convert HF_DIR OUT_DIR`)")
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise JaxcptError(f"{file}: not valid JSON ({err})") from None
    if metadata.get("format") != "jaxcpt" or metadata.get("version") != FORMAT_VERSION:
        raise JaxcptError(f"{file}: not a version-{FORMAT_VERSION} jaxcpt checkpoint")
    return metadata


def load_checkpoint(path, dtype=jnp.float32, *, param_dtype=jnp.float32) -> nnx.Module:
    path = pathlib.Path(path).absolute()
    metadata = read_metadata(path)
    family = get_family(metadata.get("model_type"), str(path / METADATA_FILE))
    cfg = family.config_class(**metadata["config"])
    if not (path / "params").is_dir():
        raise JaxcptError(f"{path / 'params'}: missing; the checkpoint is incomplete")
    checkpointer = ocp.PyTreeCheckpointer()
    stored = checkpointer.metadata(path / "params").item_metadata.tree
    # Restore as host numpy arrays: the caller decides placement/sharding afterwards.
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
    params = _int_keys(checkpointer.restore(path / "params", restore_args=as_numpy))
    return build_from_params(family, cfg, params, dtype=dtype, param_dtype=param_dtype)


def tokenizer_dir(path) -> pathlib.Path | None:
    metadata = read_metadata(path)
    rel = metadata.get("tokenizer_path")
    return pathlib.Path(path) / rel if rel else None


def _int_keys(tree):
    """orbax stores list indices (layer numbers) as string keys; nnx wants ints back."""
    if not isinstance(tree, dict):
        return tree
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v)
            for k, v in tree.items()}
