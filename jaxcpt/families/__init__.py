"""Model families as plug-ins: `registry` (the `Family` record and the lookups), one module per
family (`xlmr`: XLM-R/RoBERTa, `t5`: T5/mT5), the shared `losses` and the `tensor_table` entry
type. Import-light: the family modules (jax, flax) load on the first lookup."""

from jaxcpt.families.registry import Family, family_of, get_family, register, registered

__all__ = ["Family", "family_of", "get_family", "register", "registered"]
