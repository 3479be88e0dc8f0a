"""Per-worker device state: what lets ``/detect`` compute only the readings a device sent since its last call.

Each worker keeps, per device, the streaming state of the model (airwatt.models.streaming), the decision
rule's state (airwatt.models.decision), the last ``history_length`` readings after the gap policy (to check
that a call continues exactly this history), and the answer at its newest reading. Entries are keyed by
device id (one model version per worker: the version is part of the cache, and every entry is that
version's), and record the time of their newest reading.

Memory is bounded: an LRU over devices with ``capacity`` rows (params.yaml ``serve.state_cache_devices``),
preallocated slabs so that nothing is allocated or copied per call; a new device beyond the capacity evicts
the least recently used one. ``bytes_per_device`` says what a row costs (about 133 KiB for the default
causal model: 127 KiB of layer queues, the rest readings and rule state).

The cache is an optimisation only: the answer to a call never depends on it (see airwatt.serving.engine).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from airwatt.models.decision import DecisionState
from airwatt.models.streaming import CausalStreams

OUTCOMES = (
    "hit",
    "duplicate",
    "session",
    "miss_absent",
    "miss_history",
    "miss_short",
    "miss_behind",
    "miss_ahead",
    "conflict",
)


@dataclass
class Entry:
    """One cached device: its slab row and where its history ends."""

    row: int
    last_ms: int  # time of the newest reading processed
    last_value: float  # the last present reading (W) the gap policy fills from; NaN: none yet
    missing_run: int  # missing readings at the end of the history (after the last present one)
    missing_in_window: int  # invalid readings among the last window_length


@dataclass
class CacheStats:
    """Counters since start (the service exports them on /metrics)."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    evictions: int = 0


class StateCache:
    """The device states of one worker and one model version (module docstring)."""

    def __init__(
        self, streams: CausalStreams, *, capacity: int, history: int, appliances: int, model_version: str
    ) -> None:
        self.streams = streams
        self.capacity = capacity
        self.history = history  # readings kept per device: window_length + decision memory - 1
        self.model_version = model_version
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.free = list(range(capacity - 1, -1, -1))
        self.values = np.full((capacity, history), np.nan)  # ring by slot % history: W, NaN = invalid
        self.decision = DecisionState.blank(capacity, appliances)
        self.prob = np.zeros((capacity, appliances), np.float32)  # the answer at the newest reading
        self.power = np.zeros((capacity, appliances), np.float32)  # not gated
        self.on = np.zeros((capacity, appliances), bool)
        self.since = np.zeros((capacity, appliances), np.int64)
        self.known = np.zeros(capacity, bool)
        self.stats = CacheStats()

    @property
    def bytes_per_device(self) -> int:
        own = sum(a[0].nbytes for a in (self.values, self.prob, self.power, self.on, self.since, self.known))
        return self.streams.bytes_per_device + own + sum(a[0].nbytes for a in self.decision.arrays())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, device_id: str) -> Entry | None:
        entry = self.entries.get(device_id)
        if entry is not None:
            self.entries.move_to_end(device_id)
        return entry

    def claim(self, device_id: str) -> Entry:
        """The device's entry to overwrite: its own row, a free one, or the least recently used device's."""
        entry = self.entries.pop(device_id, None)
        if entry is None:
            if self.free:
                row = self.free.pop()
            else:
                _, evicted = self.entries.popitem(last=False)
                self.stats.evictions += 1
                row = evicted.row
            entry = Entry(row, 0, float("nan"), 0, 0)
        self.entries[device_id] = entry
        return entry

    def forget(self, device_ids: Sequence[str]) -> None:
        """Drop these devices' states (their rows are free again); unknown ids are ignored."""
        for device_id in device_ids:
            entry = self.entries.pop(device_id, None)
            if entry is not None:
                self.free.append(entry.row)

    def count(self, outcome: str) -> None:
        self.stats.outcomes[outcome] += 1

    def rows(self, entries: list[Entry]) -> np.ndarray:
        return np.array([e.row for e in entries], np.int64)
