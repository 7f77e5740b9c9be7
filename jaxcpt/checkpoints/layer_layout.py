"""Run checkpoints in either layer layout: a run may resume (or start from another run) with
`scan_layers` switched. A checkpoint is stored in the layout of the run that wrote it (no copy at
save time); restoring finds that layout from orbax's tree metadata, reads the arrays in it and
converts them on device to the layout the run asks for.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxcpt.checkpoints import integrity
from jaxcpt.models import layer_stack


def shapes(tree) -> dict[str, tuple]:
    """{stored array name: (shape, dtype)} of a state tree or of orbax's tree metadata."""
    return {name: (tuple(leaf.shape), str(leaf.dtype))
            for name, leaf in integrity.named_leaves(tree).items()}


def as_stored(abstract, stored: dict[str, tuple], keep: Callable[[str], bool] = lambda n: True):
    """`abstract` in the layer layout whose arrays (names kept by `keep`) the checkpoint holds;
    `abstract` itself when neither layout matches (the caller reports the difference)."""
    for scanned in (layer_stack.has_layout(abstract, scanned=True),
                    not layer_stack.has_layout(abstract, scanned=True)):
        candidate = layer_stack.relayout(abstract, scanned=scanned)
        names = {n: s for n, s in shapes(candidate).items() if keep(n)}
        if all(stored.get(n) == s for n, s in names.items()):
            return candidate
    return abstract


def converted(tree, abstract):
    """`tree` (restored in some layout) in the layout and shardings of `abstract`."""
    scanned = layer_stack.has_layout(abstract, scanned=True)
    if layer_stack.has_layout(tree, scanned=scanned):
        return tree
    shardings = jax.tree.map(lambda s: s.sharding, abstract)
    return jax.jit(lambda t: layer_stack.relayout(t, scanned=scanned),
                   out_shardings=shardings)(tree)
