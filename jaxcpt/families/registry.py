"""The family registry: one `Family` per model architecture, found by its HF `model_type`.

A family owns everything that differs between architectures: config and model classes, the HF
tensor table (import and export), where the word embedding and the output head live in the
parameter tree, its training objectives, batch fields and loss, its FLOPs count and a synthetic
batch maker. Code outside a family module asks the registry (`get_family`, `family_of`) and
never compares `model_type` strings. Adding an architecture = writing one module that builds a
`Family` and calls `register` (the built-in ones are imported on first lookup).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from jaxcpt.errors import JaxcptError

BUILTIN_MODULES = ("jaxcpt.families.xlmr", "jaxcpt.families.t5", "jaxcpt.families.llama")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]             # HF config.json `model_type` values
    config_class: type
    # model_class(cfg, *, dtype, param_dtype, rngs, scan_layers, remat_policy); its layers are a
    # `models.layer_stack` under the attribute `layers` (the layout conversion looks there)
    model_class: type
    # -- Hugging Face conversion: one tensor table read in both directions
    config_from_hf: Callable[[dict, str], Any]
    config_to_hf: Callable[[Any, bool], dict]           # (config, keep_factors)
    tensor_specs: Callable[..., list]                   # (config, *, with_head) -> [TensorSpec]
    strip_prefix: Callable[[dict], dict]                # HF names -> table names
    hf_prefix: Callable[[str], str]                     # table names -> HF names on export
    has_head: Callable[[dict], bool]
    head_prefix: str                                    # HF name prefix of the output head
    ignored_prefixes: tuple[str, ...] = ()              # HF tensors we do not model
    config_from_tensors: Callable[[Any, dict, str], Any] = lambda cfg, tensors, source: cfg
    config_tensors: tuple[str, ...] = ()                # HF tensors config_from_tensors reads
    # -- the parameter tree
    word_embedding_path: tuple = ()                     # dense rows or OFA coordinates/primitives
    head_paths: tuple[tuple, ...] = ()                  # the output head (may be absent: tied)
    # -- training
    objectives: tuple[str, ...] = ()                    # data objectives; the first is the default
    loss_sums: Callable | None = None                   # (model, batch, ...) -> LossSums
    batch_fields: tuple[str, ...] = ()
    langsamp_fields: tuple[str, ...] = ()               # extra fields with LangSAMP (if supported)
    loss_weight_key: str = ""
    tokens_in: Callable[[dict], int] | None = None      # real input tokens of a host batch
    step_flops: Callable[..., float] | None = None      # (config, *, batch_size, sequence_length,
                                                        #  target_length) -> training FLOPs
    synthetic_batch: Callable[..., dict] | None = None  # (rng, config, *, batch_size,
                                                        #  sequence_length, target_length)
    # -- evaluation, peers, presets
    mlm_eval: bool = False                              # `jaxcpt eval` (MLM loss, retrieval)
    peer_class: str | None = None                       # transformers Auto class that loads an
                                                        # export (parity tests); None: no peer
    presets: dict = dataclasses.field(default_factory=dict)  # name -> config: "tiny" (tests,
                                                        # smoke runs), "large" (planning)

    @property
    def vocab_paths(self) -> tuple[tuple, ...]:
        """Subtrees whose leading axis is the (padded) vocabulary."""
        return (self.word_embedding_path, *self.head_paths)

    @property
    def supports_langsamp(self) -> bool:
        return bool(self.langsamp_fields)

    def fields(self, langsamp: bool = False) -> tuple[str, ...]:
        return self.batch_fields + (self.langsamp_fields if langsamp else ())


_REGISTRY: dict[str, Family] = {}
_loaded = False


def register(family: Family) -> Family:
    """Make `family` the one for each of its model types (re-registering replaces)."""
    for model_type in family.model_types:
        _REGISTRY[model_type] = family
    return family


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in BUILTIN_MODULES:
            importlib.import_module(name)


def registered() -> dict[str, Family]:
    """model_type -> Family, built-in families included."""
    _load_builtins()
    return dict(_REGISTRY)


def get_family(model_type: str | None, source: str = "config") -> Family:
    families = registered()
    if model_type is None:
        raise JaxcptError(f"{source}: config has no 'model_type'; expected one of "
                          f"{', '.join(sorted(families))}")
    if model_type not in families:
        raise JaxcptError(f"{source}: unknown model_type {model_type!r}; supported: "
                          f"{', '.join(sorted(families))}")
    return families[model_type]


def family_of(model_or_config) -> Family:
    """The family of a model (its `.config`) or of a model config."""
    cfg = getattr(model_or_config, "config", model_or_config)
    return get_family(cfg.model_type, type(model_or_config).__name__)
