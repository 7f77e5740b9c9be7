"""Hugging Face directories and jaxcpt checkpoints <-> jaxcpt models."""
