"""Flax NNX model families. Import without seqio/TensorFlow."""

from jaxcpt.models.embeddings import DenseEmbedding, FactorizedEmbedding, padded_vocab_size
from jaxcpt.models.llama import LlamaConfig, LlamaForCausalLM
from jaxcpt.models.t5 import T5Config, T5ForConditionalGeneration
from jaxcpt.models.xlmr import XLMRConfig, XLMRobertaForMaskedLM

__all__ = ["DenseEmbedding", "FactorizedEmbedding", "LlamaConfig", "LlamaForCausalLM", "T5Config", "T5ForConditionalGeneration",
           "XLMRConfig", "XLMRobertaForMaskedLM", "padded_vocab_size"]
