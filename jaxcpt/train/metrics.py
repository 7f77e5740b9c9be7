"""FLOPs/MFU accounting, TensorBoard scalars and the console progress line.

MFU = achieved model FLOPs / device peak. Per step we count 6·(non-embedding params)·tokens for
the transformer blocks, 6·(the vocab projection actually computed) — only at the gathered masked
positions for MLM — and 6·(attention score + value FLOPs) for full bidirectional (or causal)
attention. Embedding lookups are free.
"""

from __future__ import annotations

import json
import time

import numpy as np
from etils import epath

# Dense bf16 peak FLOP/s per device (vendor numbers, no sparsity).
DEVICE_PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA A100": 312e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
}


def device_peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    for name, peak in sorted(DEVICE_PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if kind.startswith(name) or name in kind:
            return peak
    return None


class MetricsWriter:
    """TensorBoard event files (process 0 only) + a console line with a progress bar and ETA.

    A resumed run re-trains the steps after its checkpoint: their old rows are dropped from
    metrics.jsonl (one row per step) and TensorBoard is told to purge its events from there on."""

    def __init__(self, model_dir, *, total_steps: int, start_step: int, enabled: bool = True,
                 tensorboard: bool = True):
        self.total, self.start = total_steps, start_step
        self.started = time.time()
        self.writer = self.jsonl = self.eval_jsonl = None
        self.enabled = enabled  # process 0 writes and prints; the others stay quiet
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            logdir = epath.Path(model_dir) / "tensorboard"
            purge = start_step + 1 if logdir.exists() else None
            self.writer = SummaryWriter(str(logdir), flush_secs=10, purge_step=purge)
        if enabled:  # metrics.jsonl: every step's train metrics; eval.jsonl: every evaluation
            paths = [epath.Path(model_dir) / name for name in ("metrics.jsonl", "eval.jsonl")]
            for path in paths:
                _drop_rows_after(path, start_step)
            self.jsonl, self.eval_jsonl = (path.open("a") for path in paths)

    def record(self, step: int, row: dict, *, evaluation: bool = False) -> None:
        """A metrics.jsonl row (or, with `evaluation`, an eval.jsonl row) for `step`."""
        out = self.eval_jsonl if evaluation else self.jsonl
        if out is not None:
            out.write(json.dumps({"step": step, **row}) + "\n")
            out.flush()

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None and np.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def console(self, step: int, values: dict[str, float]) -> str:
        done = step - self.start
        elapsed = time.time() - self.started
        eta = elapsed / max(done, 1) * (self.total - step)
        width = 20
        filled = int(width * step / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items() if v is not None)
        line = f"[{bar}] step {step}/{self.total}  {shown}  eta {_duration(eta)}"
        if self.enabled:
            print(line, flush=True)
        return line

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        for out in (self.jsonl, self.eval_jsonl):
            if out is not None:
                out.close()


def _drop_rows_after(path: epath.Path, step: int) -> None:
    """Keep the rows of steps <= `step` (rewritten atomically; a torn last line is dropped too)."""
    if not path.exists():
        return
    kept, changed = [], False
    for line in path.read_text().splitlines():
        try:
            row_step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            changed = True
            continue
        if row_step <= step:
            kept.append(line)
        else:
            changed = True
    if changed:
        from jaxcpt.files import atomic_write

        atomic_write(path, "".join(line + "\n" for line in kept))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
