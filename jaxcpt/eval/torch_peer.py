"""The evaluation's two forward passes computed by transformers' PyTorch model (the peer).

`jaxcpt.eval.mlm.mlm_scores` and `jaxcpt.eval.retrieval.embed_texts` accept a `TorchPeer` in
place of a jaxcpt model: tokenization, masking, batching and scoring stay the same code, only the
forward passes (masked-token statistics, mean-pooled hidden states) run in PyTorch. Scores of an
exported directory computed both ways must agree; `jaxcpt eval --backend transformers` and the
demo's check of its export use this. Needs torch (installed with the `test` extra).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from jaxcpt.errors import JaxcptError


@dataclasses.dataclass(frozen=True)
class PeerConfig:
    """The fields of a jaxcpt model config that evaluation reads."""

    num_layers: int
    max_position_embeddings: int
    pad_token_id: int
    vocab_size: int


class TorchPeer:
    def __init__(self, hf_dir):
        try:
            import torch
            from transformers import AutoModelForMaskedLM
        except ImportError as err:
            raise JaxcptError(f"the transformers backend needs PyTorch ({err}); install the "
                              "test extra: pip install -e '.[test]'") from None
        self.torch = torch
        path = pathlib.Path(hf_dir)
        try:
            self.model = AutoModelForMaskedLM.from_pretrained(str(path)).eval()
        except (OSError, ValueError) as err:
            raise JaxcptError(f"{path}: transformers cannot load it "
                              f"({str(err).splitlines()[0]})") from None
        hf = self.model.config
        self.config = PeerConfig(hf.num_hidden_layers, hf.max_position_embeddings,
                                 hf.pad_token_id, hf.vocab_size)

    def _forward(self, ids_BL: np.ndarray, **kw):
        ids = self.torch.as_tensor(np.asarray(ids_BL, np.int64))
        with self.torch.no_grad():
            return self.model(input_ids=ids, attention_mask=(ids != self.config.pad_token_id).long(),
                              **kw)

    def masked_stats(self, inputs_BL, positions_BM, targets_BM, weights_BM):
        """Per-row (nll_B, correct_B, count_B) over the weighted masked positions."""
        torch = self.torch
        logits_BLV = self._forward(inputs_BL).logits
        positions_BM1 = torch.as_tensor(np.asarray(positions_BM, np.int64))[..., None]
        # gather before going to float64: [B,L,V] of a 60k vocabulary would be ~250 MB per batch
        logits_BMV = torch.gather(logits_BLV, 1, positions_BM1.expand(-1, -1, logits_BLV.shape[-1]))
        logits_BMV = logits_BMV.double()
        targets_BM = torch.as_tensor(np.asarray(targets_BM, np.int64))
        nll_BM = -torch.log_softmax(logits_BMV, -1).gather(-1, targets_BM[..., None])[..., 0]
        correct_BM = (logits_BMV.argmax(-1) == targets_BM).double()
        weights_BM = torch.as_tensor(np.asarray(weights_BM, np.float64))
        return ((nll_BM * weights_BM).sum(-1).numpy(), (correct_BM * weights_BM).sum(-1).numpy(),
                weights_BM.sum(-1).numpy())

    def mean_pooled(self, ids_BL, num_layers: int) -> np.ndarray:
        """Mean over the non-pad tokens of hidden_states[num_layers] (0 = embeddings)."""
        states = self._forward(ids_BL, output_hidden_states=True).hidden_states
        h_BLH = states[num_layers].double().numpy()
        mask_BL1 = (np.asarray(ids_BL) != self.config.pad_token_id)[..., None].astype(np.float64)
        return (h_BLH * mask_BL1).sum(1) / np.maximum(mask_BL1.sum(1), 1.0)
