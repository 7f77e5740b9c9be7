"""jaxcpt: multilingual continued pretraining in JAX/Flax."""

__all__ = ["load_hf", "save_hf"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import jaxcpt.cli` (and `jaxcpt --help`) must not import jax and flax.
    if name == "load_hf":
        from jaxcpt.convert.hf_import import load_hf

        return load_hf
    if name == "save_hf":
        from jaxcpt.convert.hf_export import save_hf

        return save_hf
    raise AttributeError(f"module 'jaxcpt' has no attribute {name!r}")
