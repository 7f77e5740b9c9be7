"""The one interface of all embedding initializers: `InitResult` and the `INITIALIZERS` registry.

Every initializer is registered under its CLI name (`jaxcpt init-embeddings --method NAME`) and is
called as

    fn(source_embeddings, source_tokenizer, target_tokenizer, *, dims=(k, ...), seed=S,
       word_vectors=None, exclude_special_neighbors=False, source_output_embeddings=None,
       initializer_range=0.02) -> dict[int, InitResult]

- source_embeddings: [V_s, H] float32, exactly the rows of the source tokenizer's ids;
- tokenizers: HF tokenizer directories or objects (`jaxcpt.tokenizer_loader.load_tokenizer`);
- dims: the requested k values (k = H: dense rows; k < H: coordinates of the SVD factorization,
  `jaxcpt.init.factorize.factorize`), one call serves several k;
- source_output_embeddings: [V_s, H] rows of an untied output embedding (mT5 lm_head) or None;
- initializers accept and ignore keywords they do not use (**kwargs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import importlib
from typing import Callable

import numpy as np

from jaxcpt.errors import JaxcptError


@dataclass
class InitResult:
    """Target-vocabulary embedding for one k.

    embeddings: [V_t, k] float32 target coordinates (k = H: the full embedding rows).
    primitives: [k, H] float32 (embeddings @ primitives = dense rows), None when k = H.
    output_rows: [V_t, H] float32 rows of an untied output embedding (mT5 lm_head), or None.
    stats: counts such as copied / neighbors / random / ties_at_k, JSON-serializable.
    """

    embeddings: np.ndarray
    primitives: np.ndarray | None = None
    output_rows: np.ndarray | None = None
    stats: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.embeddings.shape[1])

    def dense(self) -> np.ndarray:
        """[V_t, H] dense rows (embeddings @ primitives; the embeddings themselves when k = H)."""
        if self.primitives is None:
            return self.embeddings
        return (self.embeddings @ self.primitives).astype(np.float32)


Initializer = Callable[..., dict[int, InitResult]]

INITIALIZERS: dict[str, Initializer] = {}


def register(name: str) -> Callable[[Initializer], Initializer]:
    """Decorator: make an initializer available to the Python API and `jaxcpt init-embeddings`."""

    def add(fn: Initializer) -> Initializer:
        INITIALIZERS[name] = fn
        return fn

    return add


# Modules whose import registers initializers (OFA; the baselines, WECHSEL and FOCUS beside it).
INITIALIZER_MODULES = ("jaxcpt.init.ofa", "jaxcpt.init.baselines", "jaxcpt.init.wechsel",
                       "jaxcpt.init.focus", "jaxcpt.init.clp", "jaxcpt.init.transmi")


def load_initializers() -> dict[str, Initializer]:
    """Import every initializer module, then return the filled registry."""
    for module in INITIALIZER_MODULES:
        importlib.import_module(module)
    return INITIALIZERS


def get_initializer(name: str) -> Initializer:
    registry = load_initializers()
    if name not in registry:
        raise JaxcptError(f"unknown initialization method {name!r}; choose from {sorted(registry)}")
    return registry[name]
