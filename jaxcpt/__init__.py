"""jaxcpt: multilingual continued pretraining in JAX/Flax."""

__all__ = ["load_hf", "save_hf"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import jaxcpt.cli` (and `jaxcpt --help`) must not import jax and flax.
    if name in __all__:
        from jaxcpt.convert import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'jaxcpt' has no attribute {name!r}")
