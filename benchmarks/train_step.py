"""Train-step throughput: jaxcpt's jitted MLM step vs transformers' PyTorch XLMRobertaForMaskedLM
(eager, AdamW) on the same config and the same batches, side by side in one run.

    .venv/bin/python benchmarks/train_step.py                    # CPU, small XLM-R, both sides
    .venv/bin/python benchmarks/train_step.py --preset base --seq 512 --batch 32 --dtype bfloat16 \
        --sides jax           # on a GPU/TPU: XLM-R base, reports MFU from the FLOPs count

Each side runs in its own subprocess (peak RSS = that process's ru_maxrss). Tokens/s counts real
input tokens; the first `--warmup` steps (compilation) are excluded. Prints a table and writes
JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

PRESETS = {
    "small": dict(vocab_size=50000, hidden_size=256, num_layers=4, num_heads=4,
                  intermediate_size=1024),
    "base": dict(vocab_size=250002, hidden_size=768, num_layers=12, num_heads=12,
                 intermediate_size=3072),
}


def batches(args, n):
    import numpy as np

    from jaxcpt.data import synthetic

    rng = np.random.default_rng(0)
    return [synthetic.mlm_batch(rng, batch_size=args.batch, sequence_length=args.seq,
                                vocab_size=PRESETS[args.preset]["vocab_size"]) for _ in range(n)]


def run_jax(args) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxcpt import sharding
    from jaxcpt.families import family_of
    from jaxcpt.models import XLMRConfig
    from jaxcpt.train import metrics, optimizer as opt_lib, state as state_lib
    from jaxcpt.train import train_state
    from jaxcpt.train.data import to_global
    from jaxcpt.train.step import make_train_step

    cfg = XLMRConfig(**PRESETS[args.preset], max_position_embeddings=args.seq + 2,
                     hidden_dropout=0.0, attention_dropout=0.0)
    family = family_of(cfg)
    mesh = sharding.make_mesh(sharding.MeshConfig())
    setup = state_lib.model_setup(cfg, mesh, jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    optimizer, lr = opt_lib.make_optimizer(opt_lib.OptimizerConfig(warmup_steps=0), setup.abstract_params,
                                           args.steps)
    shardings = train_state.shardings(setup, optimizer, mesh)
    state = train_state.create(state_lib.random_params(setup, 0), optimizer, shardings)
    step = jax.jit(make_train_step(setup.graphdef, optimizer, lr, family=family,
                                   num_languages=1, dropout=False, mesh=mesh),
                   in_shardings=(shardings, None), out_shardings=(shardings, None),
                   donate_argnums=0)
    data = batches(args, 4)
    for i in range(args.warmup):
        state, m = step(state, to_global(data[i % 4], mesh, family.batch_fields))
    jax.block_until_ready(m["loss"])
    start = time.perf_counter()
    for i in range(args.steps):
        state, m = step(state, to_global(data[i % 4], mesh, family.batch_fields))
    jax.block_until_ready(m["loss"])
    seconds = time.perf_counter() - start
    flops = family.step_flops(cfg, batch_size=args.batch, sequence_length=args.seq)
    peak = metrics.device_peak_flops(jax.devices()[0])
    return {"side": "jaxcpt", "device": jax.devices()[0].device_kind,
            "tokens_per_s": args.batch * args.seq * args.steps / seconds,
            "step_s": seconds / args.steps, "loss": float(m["loss"]),
            "mfu": flops * args.steps / seconds / (peak * jax.device_count()) if peak else None}


def run_torch(args) -> dict:
    import numpy as np
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    p = PRESETS[args.preset]
    cfg = XLMRobertaConfig(vocab_size=p["vocab_size"], hidden_size=p["hidden_size"],
                           num_hidden_layers=p["num_layers"], num_attention_heads=p["num_heads"],
                           intermediate_size=p["intermediate_size"],
                           max_position_embeddings=args.seq + 2, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = XLMRobertaForMaskedLM(cfg).to(device).train()
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    data = []
    for b in batches(args, 4):
        labels = np.full(b["input_ids"].shape, -100, np.int64)
        rows = np.repeat(np.arange(args.batch)[:, None], b["masked_positions"].shape[1], 1)
        keep = b["masked_weights"] > 0
        labels[rows[keep], b["masked_positions"][keep]] = b["masked_targets"][keep]
        data.append((torch.as_tensor(b["input_ids"], dtype=torch.long, device=device),
                     torch.as_tensor(labels, device=device)))

    def one(i):
        ids, labels = data[i % 4]
        with torch.autocast(device, dtype=dtype, enabled=dtype == torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(args.warmup):
        one(i)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(args.steps):
        loss = one(i)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"side": "pytorch eager", "device": device,
            "tokens_per_s": args.batch * args.seq * args.steps / seconds,
            "step_s": seconds / args.steps, "loss": float(loss), "mfu": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default="small")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--sides", default="jax,torch")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.side:  # child process: one side, JSON on the last line
        result = run_jax(args) if args.side == "jax" else run_torch(args)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(result))
        return
    results = []
    for side in args.sides.split(","):
        argv = [a for a in sys.argv[1:]] + ["--side", side]
        out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{side} side failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{side}: done", file=sys.stderr, flush=True)
    print(f"XLM-R {args.preset}, batch {args.batch} × seq {args.seq}, {args.dtype}, "
          f"{args.steps} timed steps")
    print("| side | device | tokens/s | s/step | peak RSS GB | MFU |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        print(f"| {r['side']} | {r['device']} | {r['tokens_per_s']:.0f} | {r['step_s']:.3f} | "
              f"{r['peak_rss_gb']:.2f} | {mfu} |")
    if len(results) == 2:
        print(f"ratio jaxcpt / pytorch: {results[0]['tokens_per_s'] / results[1]['tokens_per_s']:.2f}×")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
