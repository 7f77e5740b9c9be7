"""Embedding initializers for an extended vocabulary: OFA (exact) and the baselines, one interface.

`ofa(...)` and every entry of `INITIALIZERS` return {k: InitResult}; see `jaxcpt.init.result` for
the calling convention shared by all methods (`load_initializers()` imports the baseline modules).
Importing this package stays light (numpy only): jax and transformers load on first use.
"""

from jaxcpt.init.factorize import copy_overlap, factorize
from jaxcpt.init.ofa import ofa, random_fallback
from jaxcpt.init.result import (INITIALIZERS, InitResult, get_initializer, load_initializers,
                                register)
from jaxcpt.init.tokens import overlap, standardized_strings
from jaxcpt.tokenizer_loader import load_tokenizer

__all__ = ["INITIALIZERS", "InitResult", "copy_overlap", "factorize", "get_initializer",
           "load_initializers", "load_tokenizer", "ofa", "overlap", "random_fallback", "register",
           "standardized_strings"]
