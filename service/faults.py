"""Fault knobs for rollback drills: a model version made slow or wrong on purpose.

A drill shows that a bad model is rolled back by itself; it needs a model that is bad in a
known, controllable way without training one. ``MODELROLLOUT_FAULTS`` is a JSON object, one
entry per model version (versions not named are untouched)::

    {"v2":   {"burn": 0.02},                         # every scoring call +20 ms of CPU
     "slow": {"burn": 0.1, "fraction": 0.03},        # 3% of calls +100 ms: tail-only slowness
     "bad":  {"relabel": {"Dining": "Shopping"}}}    # Dining answered as Shopping

- ``burn`` (seconds, 0 < burn <= 10): CPU burned *inside* the model's scoring call
  (:meth:`Fault.score`), so the call really takes that much longer and occupies a core, and
  ``modelrollout_inference_seconds`` of that version shows it. The burn is a busy loop of
  SHA-256 over a 64 KiB buffer: the hashing releases the GIL, as LightGBM's prediction
  does, so a burning model costs what a heavier model would (a heavy-shadow drill), and
  it is never a sleep on the event loop.
- ``fraction`` (0 < fraction <= 1, default 1): the share of scoring calls that burn, drawn
  independently per call; 0.03 gives a candidate whose p99 is slow and whose p95 is not.
  It applies to ``burn`` only.
- ``relabel`` (category -> category): every row the model would answer with the first
  category is answered with the second (its probability moves to the second class), on
  every call. Categories must be classes of the model, else the entry is ignored for
  that model (and logged once at load time by the caller). A candidate wrong in one
  category only.

The knobs never touch a version they do not name, so a production pod with the variable
unset runs exactly the normal code path plus one dict lookup per scoring call.

The older ``MODELROLLOUT_FAULT_DELAY=VERSION=SECONDS[,...]`` still works: each entry is a
``burn`` of that many seconds on every call (it used to sleep).

>>> faults = parse_faults('{"v2": {"burn": 0.001, "fraction": 0.5}}')
>>> faults["v2"].burn, faults["v2"].fraction, faults["v2"].relabel
(0.001, 0.5, {})
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

ENV_VAR: Final = "MODELROLLOUT_FAULTS"
_BUFFER: Final = b"\x00" * 65536  # SHA-256 releases the GIL for buffers above 2 KiB


class FaultError(ValueError):
    """A fault specification that cannot be used; the message says which part."""


class Fault(BaseModel):
    """What is wrong with one model version (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    burn: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    relabel: dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict
    )

    def score(
        self,
        proba: npt.NDArray[np.float64],
        classes: Sequence[str],
        rng: random.Random | None = None,
    ) -> npt.NDArray[np.float64]:
        """Apply the fault to one scoring call's probabilities (burning CPU first, when this
        call is among ``fraction``); a new array when relabelled, else ``proba`` itself."""
        if self.burn > 0 and (self.fraction >= 1.0 or (rng or random).random() < self.fraction):
            burn_cpu(self.burn)
        if not self.relabel:
            return proba
        index = {label: i for i, label in enumerate(classes)}
        out = proba.copy()
        for source, target in self.relabel.items():
            i, j = index.get(source), index.get(target)
            if i is None or j is None or i == j:
                continue
            out[:, j] += out[:, i]
            out[:, i] = 0.0
        return out


def burn_cpu(seconds: float) -> None:
    """Keep one core busy for ``seconds`` (wall clock), releasing the GIL while hashing."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        hashlib.sha256(_BUFFER).digest()


_FAULTS: Final = TypeAdapter(dict[Annotated[str, Field(min_length=1)], Fault])


def parse_faults(text: str | None) -> dict[str, Fault]:
    """``MODELROLLOUT_FAULTS`` parsed: version -> :class:`Fault`; empty or unset: none.

    >>> parse_faults('{"v2": {"burn": -1}}')
    Traceback (most recent call last):
    ...
    service.faults.FaultError: v2.burn: Input should be greater than or equal to 0
    """
    if text is None or not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise FaultError(f"not JSON: {exc}") from None
    try:
        return _FAULTS.validate_python(raw)
    except ValidationError as exc:
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'faults'}: {e['msg']}" for e in exc.errors()
        ]
        raise FaultError("; ".join(parts)) from None


def merge_delays(faults: Mapping[str, Fault], delays: Mapping[str, float]) -> dict[str, Fault]:
    """The legacy per-version delays as burns on every call, beside (not over) ``faults``."""
    merged = dict(faults)
    for version, seconds in delays.items():
        if version not in merged:
            merged[version] = Fault(burn=seconds)
    return merged
