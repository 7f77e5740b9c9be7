"""Reading and writing the files of a Hugging Face model directory (no torch unless `.bin`)."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from jaxcpt.errors import JaxcptError

# A factorized (OFA) model keeps F and P under this name, never model.safetensors: transformers
# finds no weights file and refuses the directory instead of loading XLM-R with random word
# embeddings; jaxcpt reads it like any other.
FACTORS_FILE = "model.jaxcpt-factors.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "sentencepiece.bpe.model", "spiece.model", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt")


def read_config(path: pathlib.Path) -> dict:
    config_path = path / "config.json"
    if not path.is_dir():
        raise JaxcptError(f"{path}: not a directory; expected a Hugging Face model directory")
    if not config_path.is_file():
        raise JaxcptError(f"{config_path}: missing; a Hugging Face model directory needs config.json")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise JaxcptError(f"{config_path}: not valid JSON ({err})") from None


def read_tensors(path: pathlib.Path, only: tuple[str, ...] | None = None
                 ) -> dict[str, np.ndarray]:
    """The checkpoint's tensors (model.safetensors, jaxcpt's factors file, a sharded index, or
    pytorch_model.bin); with `only`, just those of these names that exist (safetensors files are
    then read selectively)."""
    index = path / "model.safetensors.index.json"
    for single in (path / "model.safetensors", path / FACTORS_FILE):
        if single.is_file():
            return _load_safetensors(single, only)
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(_load_safetensors(path / shard, only))
        return tensors
    if (path / "pytorch_model.bin").is_file():
        tensors = _load_torch_bin(path / "pytorch_model.bin")
        return tensors if only is None else {k: v for k, v in tensors.items() if k in only}
    raise JaxcptError(f"{path}: no model.safetensors, model.safetensors.index.json or "
                      "pytorch_model.bin; is this a Hugging Face model directory?")


def _load_safetensors(file: pathlib.Path, only: tuple[str, ...] | None = None
                      ) -> dict[str, np.ndarray]:
    if not file.is_file():
        raise JaxcptError(f"{file}: missing shard listed in model.safetensors.index.json")
    try:
        if only is None:
            return load_file(str(file))
        with safe_open(str(file), framework="np") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys() if name in only}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise JaxcptError(f"{file}: unreadable safetensors file ({err})") from None


def _load_torch_bin(file: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise JaxcptError(f"{file}: reading pytorch_model.bin needs torch; install it "
                          "(pip install torch) or convert the checkpoint to safetensors") from None
    state = torch.load(file, map_location="cpu", weights_only=True)
    return {name: t.detach().float().numpy() for name, t in state.items()}


def write_tensors(path: pathlib.Path, tensors: dict[str, np.ndarray], *,
                  factorized: bool = False) -> None:
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(path / (FACTORS_FILE if factorized else "model.safetensors")),
              metadata={"format": "pt"})


def copy_tokenizer_files(source: pathlib.Path, dest: pathlib.Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
            copied.append(name)
    return copied


def has_tokenizer(path: pathlib.Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)
