"""What jaxcpt writes to disk between steps of the flow, two different things:

- `model_checkpoint`: a jaxcpt *model* (params + `jaxcpt.json` + tokenizer), what `jaxcpt convert`
  and `jaxcpt init-embeddings --format jaxcpt` write and `jaxcpt export` reads;
- `run_checkpoints`: the orbax checkpoints of a *training run* (train state, data iterator
  position, per-array digests from `integrity`) under MODEL_DIR/checkpoints/<step>/.
"""
