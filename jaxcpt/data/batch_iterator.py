"""The training batch iterator: deterministic batches, JSON state, optional background prefetch.

A batch depends only on (seed, shard, batch number, stream position), so the state is
`{settings…, batches, raw_examples, token_offset}`. With `prefetch > 0` a worker thread prepares
batches ahead (overlapping the train step); each queued batch carries the state *after* it, so
`get_state()` always describes the batches handed out, not the ones prepared.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np

from jaxcpt.errors import JaxcptError

STATE_VERSION = 1


class BatchIterator:
    """Endless batches; `get_state()`/`set_state()` resume at exactly the next batch."""

    def __init__(self, *, batcher, open_stream: Callable, config: dict, languages: list[str],
                 prefetch: int = 2):
        self.batcher, self.languages, self.prefetch = batcher, languages, prefetch
        self._open_stream, self._config = open_stream, config
        self._thread = None
        self._open((0, 0), batches=0)

    @property
    def target_length(self) -> int | None:
        """Decoder length of seq2seq batches (derived from the objective), None for MLM."""
        return getattr(self.batcher, "target_length", None)

    def _open(self, position: tuple[int, int], batches: int) -> None:
        self.close()
        self._stream = self._open_stream(position)
        self._batches = batches
        self._state = self._current_state()
        if self.prefetch > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=self.prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._work, args=(self._queue, self._stop),
                                            name="jaxcpt-data", daemon=True)
            self._thread.start()

    def _current_state(self) -> dict:
        raw_index, offset = self._stream.position
        return {"version": STATE_VERSION, **self._config, "batches": self._batches,
                "raw_examples": raw_index, "token_offset": offset}

    def _produce(self) -> tuple[dict, dict]:
        rng = np.random.default_rng([self._config["seed"], self._config["shard"][0],
                                     self._batches])
        batch = self.batcher.materialize(self.batcher.next_rows(self._stream, rng), rng)
        self._batches += 1
        return batch, self._current_state()

    def _work(self, out: queue.Queue, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self._put(out, stop, self._produce())
        except BaseException as err:   # re-raised by __next__ in the consumer thread
            self._put(out, stop, err)

    @staticmethod
    def _put(out: queue.Queue, stop: threading.Event, item) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._thread is None:
            batch, self._state = self._produce()
            return batch
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return batch

    def get_state(self) -> dict:
        return dict(self._state)

    def set_state(self, state: dict) -> None:
        mismatched = [k for k, v in self._config.items() if state.get(k) != v]
        if state.get("version") != STATE_VERSION or mismatched:
            raise JaxcptError(f"data iterator state does not match this pipeline (differs in: "
                              f"{', '.join(mismatched) or 'version'}); restore with the same data "
                              "settings")
        self._open((state["raw_examples"], state["token_offset"]), batches=state["batches"])

    def close(self) -> None:
        """Stops the prefetch thread (also done by set_state); the iterator can't be used after."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
