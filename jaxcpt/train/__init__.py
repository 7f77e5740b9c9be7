"""Sharded continued pretraining: mesh + logical rules, jit step, optax, orbax checkpoints, loop.

Imports without seqio/TensorFlow (the data pipeline is imported only when a run uses it).
"""
