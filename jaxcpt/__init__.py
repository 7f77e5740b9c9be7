"""jaxcpt: multilingual continued pretraining in JAX/Flax."""

from jaxcpt.convert.hf import load_hf, save_hf

__all__ = ["load_hf", "save_hf"]
__version__ = "0.1.0"
