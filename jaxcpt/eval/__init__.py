"""Evaluation: per-language MLM loss / accuracy / pseudo-perplexity and sentence retrieval top-1.

    from jaxcpt.eval import EvalOptions, evaluate, format_table, load_eval_model
    em = load_eval_model("path/to/hf_dir_or_checkpoint")
    # an in-memory model: em = EvalModel(model, tokenizer, has_head=True, source=None)
    results = evaluate(em, ["de", "fr"], mlm_dir=heldout, parallel_dir=heldout,
                       options=EvalOptions(max_pairs=200))
    print(format_table(results))

Names are imported lazily, so `jaxcpt.eval.commands` (the CLI) loads without JAX.
"""

import importlib

_EXPORTS = {
    "EvalModel": "loading", "TokenSpec": "loading", "load_eval_model": "loading",
    "mlm_scores": "mlm", "pseudo_perplexity": "mlm", "text_sequences": "mlm",
    "embed_texts": "retrieval", "parallel_pairs": "retrieval", "retrieval_scores": "retrieval",
    "top1_accuracy": "retrieval", "default_layer": "retrieval",
    "EvalOptions": "suite", "evaluate": "suite", "format_table": "suite",
    "macro_average": "suite",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxcpt.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"jaxcpt.eval.{_EXPORTS[name]}"), name)
