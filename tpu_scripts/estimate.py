"""Back-of-the-envelope throughput and memory per chip for CPT on TPU slices: ESTIMATES from parameter
and FLOP counts, not measurements. Standard library only:

    python tpu_scripts/estimate.py            # the markdown table in tpu_scripts/README.md
    python tpu_scripts/estimate.py --mfu 0.3 0.35

FLOPs per training step follow DESIGN.md §6: 6 x (non-embedding params) x tokens, plus the vocabulary
projection only at predicted positions (gathered MLM positions / decoder targets), plus bidirectional
attention (score and value matmuls, 12 x layers x length x hidden per token, forward + backward).
Embedding lookups are gathers (no FLOPs). Memory: fp32 params + Adam (2 x fp32) + fp32 grads = 16 bytes
per parameter, fully sharded over the slice (fsdp = all chips); activations without rematerialization
in bf16 (Korthikanti et al. 2022: length x hidden x (34 + 5 x heads x length / hidden) bytes per layer
and sequence) plus the bf16 logits and fp32 softmax at predicted positions.
"""

from __future__ import annotations

import argparse
import dataclasses

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    vocab: int
    hidden: int
    heads: int
    ffn: int
    gated_ffn: bool          # T5 v1.1 / mT5: wi_0, wi_1, wo
    enc_layers: int
    dec_layers: int          # 0 for encoder-only
    tied_output: bool        # XLM-R ties the MLM decoder to the input embedding
    enc_len: int = 512
    dec_len: int = 0         # span corruption: 512 inputs -> 114 targets
    mask_rate: float = 0.15  # MLM: predicted positions per input token

    def ffn_params(self) -> int:
        return (3 if self.gated_ffn else 2) * self.hidden * self.ffn

    def enc_params(self) -> int:
        return self.enc_layers * (4 * self.hidden**2 + self.ffn_params())

    def dec_params(self) -> int:  # self- and cross-attention
        return self.dec_layers * (8 * self.hidden**2 + self.ffn_params())

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_output else 2)

    def total_params(self) -> int:
        return self.embedding_params() + self.enc_params() + self.dec_params()

    def predicted_per_seq(self) -> float:
        return self.dec_len if self.dec_layers else self.mask_rate * self.enc_len

    def train_flops_per_seq(self) -> float:
        h, s, t = self.hidden, self.enc_len, self.dec_len
        dense = 6 * (self.enc_params() * s + self.dec_params() * t)
        vocab = 6 * h * self.vocab * self.predicted_per_seq()
        attention = 12 * h * (self.enc_layers * s * s + self.dec_layers * (t * t + t * s))
        return dense + vocab + attention

    def activation_bytes_per_seq(self) -> float:
        h, a, s, t = self.hidden, self.heads, self.enc_len, self.dec_len
        enc = self.enc_layers * s * h * (34 + 5 * a * s / h)
        dec = self.dec_layers * t * h * (34 + 5 * a * t / h + 5 * a * s / h)
        logits = self.predicted_per_seq() * self.vocab * (2 + 4)
        return enc + dec + logits


MODELS = {
    "xlmr-base": ModelSpec("XLM-R base", 250_002, 768, 12, 3072, False, 12, 0, True),
    "xlmr-large": ModelSpec("XLM-R large", 250_002, 1024, 16, 4096, False, 24, 0, True),
    "mt5-base": ModelSpec("mT5 base", 250_112, 768, 12, 2048, True, 12, 12, False, dec_len=114),
}


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_bf16_flops: float
    hbm_gib: float


CHIPS = {"v4": Chip("v4", 275e12, 32), "v5litepod": Chip("v5e", 197e12, 16),
         "v5p": Chip("v5p", 459e12, 95), "v6e": Chip("v6e", 918e12, 32)}


def chips_in(accelerator: str) -> tuple[Chip, int]:
    """v4-8 -> 4 chips (the number counts TensorCores, 2 per chip); v5litepod-16 -> 16 chips."""
    generation, size = accelerator.rsplit("-", 1)
    per_chip = 2 if generation in ("v2", "v3", "v4", "v5p") else 1
    return CHIPS[generation], int(size) // per_chip


def estimate(model: str, accelerator: str, mfu: float = 0.45, hbm_fraction: float = 0.85) -> dict:
    spec = MODELS[model]
    chip, n_chips = chips_in(accelerator)
    seqs_per_s_chip = mfu * chip.peak_bf16_flops / spec.train_flops_per_seq()
    state_gib = 16 * spec.total_params() / n_chips / GIB
    act_gib = spec.activation_bytes_per_seq() / GIB
    free_gib = hbm_fraction * chip.hbm_gib - state_gib
    batch = 0
    while act_gib * 2 * max(batch, 1) <= free_gib:
        batch = 2 * max(batch, 1)
    tokens_per_s_chip = seqs_per_s_chip * spec.enc_len
    return dict(model=spec.name, accelerator=accelerator, chips=n_chips,
                params_m=spec.total_params() / 1e6,
                gflop_per_token=spec.train_flops_per_seq() / spec.enc_len / 1e9,
                tokens_per_s_chip=tokens_per_s_chip, tokens_per_s_slice=tokens_per_s_chip * n_chips,
                state_gib_chip=state_gib, act_gib_seq=act_gib, max_batch_chip=batch,
                hbm_gib=chip.hbm_gib, hours_per_billion=1e9 / (tokens_per_s_chip * n_chips) / 3600)


def _k(x: float) -> str:
    return f"{x / 1e3:,.0f}k" if x < 1e6 else f"{x / 1e6:.2f}M"


def markdown_table(mfu_low: float = 0.40, mfu_high: float = 0.50) -> str:
    rows = ["| model | slice | chips | params | GFLOP/token | tokens/s per chip | tokens/s slice | "
            "hours per 1B tokens | state GiB/chip | activations GiB/seq | max seqs/chip | HBM/chip |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        for accelerator in ("v4-8", "v5litepod-16", "v5p-32"):
            lo, hi = estimate(model, accelerator, mfu_low), estimate(model, accelerator, mfu_high)
            rows.append(
                f"| {lo['model']} | {accelerator} | {lo['chips']} | {lo['params_m']:.0f}M | "
                f"{lo['gflop_per_token']:.2f} | {_k(lo['tokens_per_s_chip'])}–"
                f"{_k(hi['tokens_per_s_chip'])} | {_k(lo['tokens_per_s_slice'])}–"
                f"{_k(hi['tokens_per_s_slice'])} | {hi['hours_per_billion']:.2f}–"
                f"{lo['hours_per_billion']:.2f} | {lo['state_gib_chip']:.2f} | "
                f"{lo['act_gib_seq']:.2f} | {lo['max_batch_chip']} | {lo['hbm_gib']:.0f} GiB |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mfu", type=float, nargs=2, default=(0.40, 0.50), metavar=("LOW", "HIGH"),
                        help="assumed model FLOPs utilization range (default 0.40 0.50)")
    args = parser.parse_args()
    print(f"ESTIMATES at {args.mfu[0]:.0%}–{args.mfu[1]:.0%} MFU (sequence length 512; mT5 512 -> "
          "114; fsdp over all chips; bf16 activations without remat), not measurements\n")
    print(markdown_table(*args.mfu))


if __name__ == "__main__":
    main()
