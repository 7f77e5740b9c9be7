"""Compile time and memory of the train step with scanned vs looped layers, and the remat policies.

    .venv/bin/python benchmarks/scan_layers.py                      # CPU: both families, 4/12/24 layers
    .venv/bin/python benchmarks/scan_layers.py --families xlm-roberta --depths 4 24 --out r.json

For each family and depth, the jitted train step (the one `jaxcpt train` runs: AdamW, fp32) is
lowered and compiled with `scan_layers` off and on; a second table compares the remat policies at
one depth with scanning on: XLA's temporary memory of the compiled step (activations kept for the
backward pass live there) and the step time. All rows come from one process, side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np


def _setup(model_type: str, depth: int, scan: bool, remat: str, args):
    import jax.numpy as jnp

    from jaxcpt import sharding
    from jaxcpt.families import registered
    from jaxcpt.train import optimizer as opt_lib, state as state_lib, train_state

    family = registered()[model_type]
    base = family.presets["tiny"]
    sizes = (dict(hidden_size=args.hidden, num_heads=4, intermediate_size=4 * args.hidden,
                  num_layers=depth, hidden_dropout=0.0, attention_dropout=0.0,
                  max_position_embeddings=args.seq + 2)
             if hasattr(base, "hidden_size") else
             dict(d_model=args.hidden, d_kv=args.hidden // 4, num_heads=4, d_ff=4 * args.hidden,
                  num_layers=depth, dropout_rate=0.0))
    cfg = dataclasses.replace(base, vocab_size=args.vocab, model_type=model_type, **sizes)
    mesh = sharding.make_mesh(sharding.MeshConfig())
    setup = state_lib.model_setup(cfg, mesh, jnp.float32, scan_layers=scan, remat_policy=remat)
    optimizer, lr = opt_lib.make_optimizer(opt_lib.OptimizerConfig(warmup_steps=0),
                                           setup.abstract_params, 10)
    shardings = train_state.shardings(setup, optimizer, mesh)
    return family, cfg, setup, optimizer, lr, shardings


def measure(model_type: str, depth: int, scan: bool, remat: str, args, *, steps: int = 0) -> dict:
    import jax

    from jaxcpt.train import state as state_lib, train_state
    from jaxcpt.train.data import to_global
    from jaxcpt.train.step import make_train_step

    family, cfg, setup, optimizer, lr, shardings = _setup(model_type, depth, scan, remat, args)
    fn = make_train_step(setup.graphdef, optimizer, lr, family=family, num_languages=1,
                         dropout=False, mesh=setup.mesh, rules=setup.rules)
    step = jax.jit(fn, in_shardings=(shardings, None), out_shardings=(shardings, None),
                   donate_argnums=0)
    rng = np.random.default_rng(0)
    batch = to_global(family.synthetic_batch(rng, cfg, batch_size=args.batch,
                                             sequence_length=args.seq, target_length=args.seq // 4),
                      setup.mesh, family.batch_fields)
    abstract = train_state.abstract(setup, optimizer, shardings)
    start = time.perf_counter()
    compiled = step.lower(abstract, batch).compile()
    row = {"family": model_type, "layers": depth, "scan": scan, "remat": remat,
           "compile_s": time.perf_counter() - start,
           "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20}
    if steps:
        state = train_state.create(state_lib.random_params(setup, 0), optimizer, shardings)
        state, m = compiled(state, batch)  # warm-up
        jax.block_until_ready(m["loss"])
        start = time.perf_counter()
        for _ in range(steps):
            state, m = compiled(state, batch)
        jax.block_until_ready(m["loss"])
        row["step_s"] = (time.perf_counter() - start) / steps
        row["loss"] = float(m["loss"])
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["xlm-roberta", "t5"])
    p.add_argument("--depths", nargs="+", type=int, default=[4, 12, 24])
    p.add_argument("--remat-depth", type=int, default=12)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed steps per remat row")
    p.add_argument("--out")
    args = p.parse_args(argv)
    compile_rows, remat_rows = [], []
    for family in args.families:
        for depth in args.depths:
            for scan in (False, True):
                compile_rows.append(measure(family, depth, scan, "none", args))
                print(json.dumps(compile_rows[-1]), flush=True)
        for remat in ("none", "full", "dots_saveable"):
            remat_rows.append(measure(family, args.remat_depth, True, remat, args,
                                      steps=args.steps))
            print(json.dumps(remat_rows[-1]), flush=True)
    print(f"\ncompile seconds of the train step (H={args.hidden}, batch {args.batch}×{args.seq})")
    print("family        layers   loop (scan off)   scan on")
    for family in args.families:
        for depth in args.depths:
            off, on = (next(r for r in compile_rows if r["family"] == family
                            and r["layers"] == depth and r["scan"] == s) for s in (False, True))
            print(f"{family:13s} {depth:6d}   {off['compile_s']:15.1f}   {on['compile_s']:7.1f}")
    print(f"\nremat policies, {args.remat_depth} scanned layers")
    print("family        policy          temp MiB   step s   loss")
    for r in remat_rows:
        print(f"{r['family']:13s} {r['remat']:14s} {r['temp_mib']:9.1f} {r['step_s']:8.3f}   "
              f"{r['loss']:.6f}")
    result = {"args": vars(args), "compile": compile_rows, "remat": remat_rows}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
