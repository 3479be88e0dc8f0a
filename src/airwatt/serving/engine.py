"""The in-process engine behind the service: readings -> detect / predict answers.

What a call answers is a function of the readings it sends (stateless form) or of all the readings sent in
the session so far (session form), never of which worker answers or what it cached: the state at the newest
reading ``t`` is the model's causal decision rule (airwatt.models.decision) over the on-probabilities of the
last ``M`` readings, each from the window of ``W`` readings ending at it, so it depends on the last
``history = W + M - 1`` readings only (readings before the history sent count as missing). It is exactly
what evaluation scores (``ModelBundle.predict_series``, rule "served").

How it is computed (airwatt.serving.state holds each worker's device states):

- *hit*: the worker holds the device's state, the call sends at least ``history`` readings, ends at most
  ``MAX_STEP_READINGS`` after the cached newest reading and agrees with the cached readings where they
  overlap: only the new readings are computed, one streaming step each (airwatt.models.streaming);
- *duplicate*: the same newest reading as cached, same history: the cached answer;
- *session*: the session form continuing the cached state: its readings are stepped (the gap policy
  continued from the cached readings); no state: HTTP 409 (``SessionConflict``), nothing changed;
- *miss* (no state, another history, a gap or out of order, too far ahead, fewer than ``history``
  readings): the last ``history`` readings are run in one sequence pass, and the result is cached (unless the
  call is older than the cached state).

One lock per worker serialises the cache (the worker runs one torch thread; calls from the event loop and
from the thread pool take turns), so concurrent calls for one device give each its own answer and the cache
holds the newest.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from airwatt.appliances import inventory_columns
from airwatt.config import ReportParams, ServeParams
from airwatt.errors import ConfigError, DataError
from airwatt.models import ModelBundle
from airwatt.models.causal import CausalNet
from airwatt.models.decision import NEVER, DecisionRule, DecisionState, decide_series
from airwatt.models.streaming import CausalStreams
from airwatt.prepare.grid import answerable, missing_in_windows
from airwatt.serving.inputs import (
    GridReadings,
    Limits,
    RequestError,
    SessionConflict,
    SessionReadings,
    as_time,
    check_batch_size,
    check_series_size,
    to_grid,
    to_grids,
    to_session,
    to_sessions,
    unknown_reason,
)
from airwatt.serving.loading import StagedModel
from airwatt.serving.schemas import (
    ApplianceInfo,
    DetectResponse,
    DeviceReadings,
    ModelInfo,
    PredictResponse,
    ReportRequest,
)
from airwatt.serving.state import Entry, StateCache

log = logging.getLogger(__name__)
# A hit steps each new reading (~0.3 ms for one device, about the same for 50 together); a miss runs the
# history in one pass (~1.5 ms for one device): beyond this many new readings, recomputing is cheaper.
MAX_STEP_READINGS = 8
# Devices per history pass (torch): a pass holds every layer's inputs over the history, about 1.3 MiB per
# device (a batch of 1,000 misses in one pass took 1.3 GiB more in its worker; docs/serving.md).
PASS_DEVICES = 64
PROB_DECIMALS = 6  # prob_on is sent rounded (float32 outputs carry about 7 significant digits)


@dataclass
class Answer:
    """The state at one device's newest reading (A appliances)."""

    device_id: str
    at_ms: int
    aggregate_w: float  # the newest reading after the gap policy (NaN: missing)
    known: bool
    missing: int  # missing readings in the newest window
    prob: np.ndarray  # (A,) float32
    power: np.ndarray  # (A,) float32, not gated
    on: np.ndarray  # (A,) bool
    since_ms: list[int | None]


@dataclass
class _Step:
    """A device whose cached state advances by ``k`` readings (a hit or a session)."""

    index: int
    device_id: str
    entry: Entry
    end_ms: int
    values: np.ndarray  # (k,) float64 after the gap policy, NaN invalid
    known: np.ndarray  # (k,) bool
    missing: np.ndarray  # (k,) int
    fill: tuple[float, int]  # the gap policy's state after these readings (GridReadings.fill_state)


@dataclass
class _Miss:
    index: int
    grid: GridReadings
    store: bool


def streaming_net(bundle: ModelBundle) -> CausalNet:
    """The bundle's model if it can be served (streamed exactly); ConfigError saying why not otherwise."""
    model = bundle.model
    if not bundle.real_time or not isinstance(model, CausalNet):
        raise ConfigError(
            f"the service answers the newest reading: the {bundle.spec.arch} model predicts the "
            f"{bundle.target} reading of its window (an offline model); serve a real-time (causal) model"
        )
    if not model.sequence_exact:
        raise ConfigError(
            f"the causal model's window ({bundle.window_length} readings) must be a power of two to be "
            f"streamed exactly (its receptive field is {model.receptive_field}); retrain with "
            f"train.window_length {model.receptive_field}"
        )
    return model


class Engine:
    """A loaded real-time model, its request limits and this worker's device states."""

    def __init__(self, bundle: ModelBundle, staged: StagedModel, cfg: ServeParams) -> None:
        self.bundle = bundle
        self.staged = staged
        self.cfg = cfg
        net = streaming_net(bundle)
        self.limits = Limits.of(cfg, bundle)
        self.rule = bundle.decision_rule
        self.memory = self.rule.memory
        self.history = self.limits.history
        self.appliances = bundle.appliances
        if cfg.state_cache_devices < cfg.max_devices:
            raise ConfigError(
                f"serve.state_cache_devices ({cfg.state_cache_devices}) must hold a whole batch "
                f"(serve.max_devices {cfg.max_devices})"
            )
        self.cache = StateCache(
            CausalStreams(net, cfg.state_cache_devices),
            capacity=cfg.state_cache_devices,
            history=self.history,
            appliances=len(self.appliances),
            model_version=staged.version,
        )
        self.lock = threading.Lock()

    @classmethod
    def load(cls, staged: StagedModel, cfg: ServeParams) -> Engine:
        return cls(ModelBundle.load(staged.bundle_dir), staged, cfg)

    @property
    def model_version(self) -> str:
        return self.staged.version

    # ---- model information ------------------------------------------------------------------------------
    def info(self) -> ModelInfo:
        spec = self.bundle.spec
        decision = spec.decision_or_plain()
        return ModelInfo(
            model_version=self.model_version,
            model_uri=self.staged.uri,
            arch=spec.arch,
            appliances=list(spec.appliances),
            window_length=spec.window_length,
            interval_s=spec.interval_s,
            min_history_s=spec.window_length * spec.interval_s,
            history_readings=self.history,
            decision_memory_s=self.memory * spec.interval_s,
            max_fill_s=self.limits.max_fill_s,
            max_invalid_fraction=self.limits.max_invalid_fraction,
            state_cache_devices=self.cache.capacity,
            max_readings=self.limits.max_readings,
            max_report_readings=self.cfg.max_report_readings,
            max_devices=self.limits.max_devices,
            max_power_w=self.limits.max_power_w,
            thresholds={
                a: ApplianceInfo(**spec.on_off[a].model_dump(), **decision.appliances[a].model_dump())
                for a in spec.appliances
            },
            provenance=dict(spec.provenance),
        )

    # ---- the states at the newest readings -----------------------------------------------------------------
    def states(self, requests: Sequence[DeviceReadings]) -> list[Answer]:
        """The answer at each request's newest reading (module docstring). RequestError (422) names the
        device's field in a batch; SessionConflict (409) changes nothing."""
        check_batch_size(requests, self.limits)
        parsed = self._parse(requests)
        with self.lock:
            steps, misses, answers = self._classify(parsed)
            if steps:
                for i, answer in self._step(steps).items():
                    answers[i] = answer
            short = [m for m in misses if len(m.grid) < self.history]
            seeded = [m for m in misses if len(m.grid) >= self.history]
            for group, compute in ((short, self._windows), (seeded, self._fresh)):
                for lo in range(0, len(group), PASS_DEVICES):  # chunks: bounded transient memory
                    for i, answer in compute(group[lo : lo + PASS_DEVICES]).items():
                        answers[i] = answer
        assert all(a is not None for a in answers)
        return [a for a in answers if a is not None]

    def _parse(self, requests: Sequence[DeviceReadings]) -> list[GridReadings | SessionReadings]:
        prefix = len(requests) > 1
        seen: dict[str, int] = {}
        for i, r in enumerate(requests):
            if r.device_id in seen:
                raise RequestError(
                    f"devices[{i}].device_id", f"device {r.device_id!r} also at devices[{seen[r.device_id]}]"
                )
            seen[r.device_id] = i
        fast = to_grids(requests, self.limits) or to_sessions(requests, self.limits)
        if fast is not None:
            return list(fast)
        out: list[GridReadings | SessionReadings] = []
        for i, r in enumerate(requests):
            try:
                out.append(to_session(r, self.limits) if r.continues is not None else to_grid(r, self.limits))
            except RequestError as e:
                raise (e.under(f"devices[{i}]") if prefix else e) from None
        return out

    def _classify(
        self, parsed: list[GridReadings | SessionReadings]
    ) -> tuple[list[_Step], list[_Miss], list[Answer | None]]:
        """Hits and sessions to step, misses to compute, duplicates answered; SessionConflict first."""
        conflicts = [
            i
            for i, p in enumerate(parsed)
            if isinstance(p, SessionReadings)
            and ((e := self.cache.entries.get(p.device_id)) is None or e.last_ms != p.continues_ms)
        ]
        if conflicts:
            self.cache.count("conflict")
            raise SessionConflict(
                [f"devices[{i}].continues" if len(parsed) > 1 else "continues" for i in conflicts],
                [parsed[i].device_id for i in conflicts],
                self.history,
                self.limits.interval_s,
            )
        steps: list[_Step] = []
        misses: list[_Miss] = []
        answers: list[Answer | None] = [None] * len(parsed)
        sessions: list[tuple[int, Entry, SessionReadings]] = []
        for i, p in enumerate(parsed):
            entry = self.cache.get(p.device_id)
            if isinstance(p, SessionReadings):
                assert entry is not None
                sessions.append((i, entry, p))
                continue
            outcome = self._lookup(entry, p)
            self.cache.count(outcome)
            if outcome == "duplicate":
                assert entry is not None
                answers[i] = self._cached_answer(p.device_id, entry, p)
            elif outcome == "hit":
                assert entry is not None
                steps.append(self._hit_step(i, entry, p))
            else:
                store = outcome != "miss_behind" and len(p) >= self.history  # a short call cannot continue
                misses.append(_Miss(i, p, store=store))
        if sessions:
            self.cache.stats.outcomes["session"] += len(sessions)
            steps += self._session_steps(sessions)
        return steps, misses, answers

    def _lookup(self, entry: Entry | None, g: GridReadings) -> str:
        """How a stateless call relates to the cached state (state.OUTCOMES)."""
        if entry is None:
            return "miss_absent"
        ahead, off_grid = divmod(g.end_ms - entry.last_ms, g.interval_ms)
        if off_grid:
            return "miss_history"
        if ahead < 0:
            return "miss_behind"
        if len(g) < self.history:
            return "miss_short"
        if ahead > MAX_STEP_READINGS:
            return "miss_ahead"
        n, overlap = len(g), self.history - ahead
        sent = g.aggregate_w[n - self.history : n - ahead]  # the slots the cache also holds
        cached = self._ring(entry, entry.last_ms, overlap)
        same = (sent == cached) | (np.isnan(sent) & np.isnan(cached))
        if not same.all():
            return "miss_history"
        return "duplicate" if ahead == 0 else "hit"

    def _slot(self, ms: int) -> int:
        return ms // self.limits.interval_ms

    def _ring(self, entry: Entry, end_ms: int, n: int) -> np.ndarray:
        """The cached readings of the ``n`` slots ending at ``end_ms`` (which the ring must hold)."""
        end = self._slot(end_ms)
        return self.cache.values[entry.row, np.arange(end - n + 1, end + 1) % self.history]

    def _hit_step(self, i: int, entry: Entry, g: GridReadings) -> _Step:
        k = (g.end_ms - entry.last_ms) // g.interval_ms
        w = self.limits.window_length
        missing = missing_in_windows(g.valid, w)[-k:]
        known = g.valid[-k:] & (missing <= self.limits.max_missing)
        return _Step(
            i, g.device_id, entry, g.end_ms, g.aggregate_w[-k:].copy(), known, missing, g.fill_state()
        )

    def _session_steps(self, sessions: list[tuple[int, Entry, SessionReadings]]) -> list[_Step]:
        """Sessions of one new reading each (the common case) in one pass; others reading by reading."""
        one = [x for x in sessions if len(x[2].raw_w) == 1]
        steps = [self._session_step(i, entry, s) for i, entry, s in sessions if len(s.raw_w) != 1]
        if not one:
            return steps
        lim, iv = self.limits, self.limits.interval_ms
        entries = [e for _, e, _ in one]
        rows = self.cache.rows(entries)
        last = np.array([e.last_value for e in entries])
        run = np.array([e.missing_run for e in entries], np.int64)
        miss = np.array([e.missing_in_window for e in entries], np.int64)
        cached = np.array([e.last_ms for e in entries], np.int64) // iv
        raw = np.array([s.raw_w[0] for _, _, s in one])
        present = ~np.isnan(raw)
        run = np.where(present, 0, run + 1)
        values = np.where(present, raw, np.where(run <= lim.fill_slots, last, np.nan))
        last = np.where(present, raw, last)
        invalid = np.isnan(values)
        leaving = np.isnan(self.cache.values[rows, (cached - lim.window_length + 1) % self.history])
        missing = miss + invalid - leaving
        known = ~invalid & (missing <= lim.max_missing)
        for r, (i, entry, s) in enumerate(one):
            fill = (float(last[r]), int(run[r]))
            steps.append(
                _Step(
                    i,
                    s.device_id,
                    entry,
                    s.end_ms,
                    values[r : r + 1],
                    known[r : r + 1],
                    missing[r : r + 1],
                    fill,
                )
            )
        return steps

    def _session_step(self, i: int, entry: Entry, s: SessionReadings) -> _Step:
        """The gap policy and the window's missing count continued from the cached readings."""
        k, w = len(s.raw_w), self.limits.window_length
        values = np.empty(k)
        last, run = entry.last_value, entry.missing_run
        for j, v in enumerate(s.raw_w.tolist()):
            if v == v:  # present
                last, run = v, 0
                values[j] = v
            else:
                run += 1
                values[j] = last if run <= self.limits.fill_slots else np.nan
        invalid = np.isnan(values)
        # Invalid readings among the window ending at each new slot: the cached count, plus the new
        # invalid ones, minus those that left the window (from the ring, then from the new readings).
        older = self._ring(entry, entry.last_ms, w)  # the last w cached slots
        left = np.concatenate([np.isnan(older), invalid])[:k]  # the slot leaving as each new one enters
        missing = entry.missing_in_window + np.cumsum(invalid.astype(np.int64) - left.astype(np.int64))
        known = ~invalid & (missing <= self.limits.max_missing)
        return _Step(i, s.device_id, entry, s.end_ms, values, known, missing, (last, run))

    def _step(self, steps: list[_Step]) -> dict[int, Answer]:
        """Advance every stepped device reading by reading, all devices of a step in one model call."""
        iv = self.limits.interval_ms
        answers: dict[int, Answer] = {}
        longest = max(len(s.values) for s in steps)
        for j in range(longest):
            active = steps if j == 0 else [s for s in steps if len(s.values) > j]
            rows = self.cache.rows([s.entry for s in active])
            ends = np.array([s.end_ms - (len(s.values) - 1 - j) * iv for s in active], np.int64)
            slots = ends // iv
            values = np.array([s.values[j] for s in active])
            known = np.array([s.known[j] for s in active])
            power_n, logits = self.cache.streams.step(rows, slots, self.bundle.normalise(values))
            power_np, prob_np = self.bundle.decoder.raw_numpy(power_n, logits)
            on, since = self._decide_rows(rows, prob_np, known, slots)
            self.cache.values[rows, slots % self.history] = values
            self._remember(rows, prob_np, power_np, on, since, known)
            for r, s in enumerate(active):
                if j == len(s.values) - 1:
                    at = int(ends[r])
                    answers[s.index] = Answer(
                        s.device_id,
                        at,
                        float(values[r]),
                        bool(known[r]),
                        int(s.missing[j]),
                        prob_np[r],
                        power_np[r],
                        on[r],
                        self._since_ms(at, since[r]),
                    )
        for s in steps:
            self._update_entry(s.entry, s.end_ms, s.fill, int(s.missing[-1]))
        return answers

    def _decide_rows(
        self, rows: np.ndarray, prob: np.ndarray, known: np.ndarray, slots: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        d = self.cache.decision
        state = DecisionState(*(a[rows] for a in d.arrays()))
        on, since = state.step(self.rule, prob, known, slots)
        for name, values in zip(DecisionState.FIELDS, state.arrays(), strict=True):
            getattr(d, name)[rows] = values
        return on, since

    def _remember(
        self,
        rows: np.ndarray,
        prob: np.ndarray,
        power: np.ndarray,
        on: np.ndarray,
        since: np.ndarray,
        known: np.ndarray,
    ) -> None:
        c = self.cache
        c.prob[rows], c.power[rows], c.on[rows], c.since[rows], c.known[rows] = prob, power, on, since, known

    @staticmethod
    def _update_entry(entry: Entry, end_ms: int, fill: tuple[float, int], missing_in_window: int) -> None:
        """The entry's newest time, the gap policy's state there and the invalid readings of the window
        ending there."""
        entry.last_ms = end_ms
        entry.last_value, entry.missing_run = fill
        entry.missing_in_window = missing_in_window

    def _answer(
        self, device_id: str, row: int, at_ms: int, aggregate_w: float, known: bool, missing: int
    ) -> Answer:
        """The cached answer of ``row`` (its newest reading at ``at_ms``)."""
        c = self.cache
        return Answer(
            device_id=device_id,
            at_ms=at_ms,
            aggregate_w=aggregate_w,
            known=known,
            missing=missing,
            prob=c.prob[row].copy(),
            power=c.power[row].copy(),
            on=c.on[row].copy(),
            since_ms=self._since_ms(at_ms, c.since[row]),
        )

    def _since_ms(self, at_ms: int, since_slots: np.ndarray) -> list[int | None]:
        """Slots to times, counted back from the newest reading (its phase); NEVER -> None."""
        iv, at = self.limits.interval_ms, at_ms // self.limits.interval_ms
        return [None if s == NEVER else at_ms - (at - int(s)) * iv for s in since_slots.tolist()]

    def _cached_answer(self, device_id: str, entry: Entry, g: GridReadings) -> Answer:
        missing = int(missing_in_windows(g.valid, self.limits.window_length)[-1])
        known = bool(self.cache.known[entry.row])
        return self._answer(device_id, entry.row, g.end_ms, float(g.aggregate_w[-1]), known, missing)

    def _windows(self, misses: list[_Miss]) -> dict[int, Answer]:
        """Calls shorter than the rule's history, answered from their own windows (the pyramid forward:
        one window per answerable reading in the rule's memory, for every device in one model call) and
        not cached: a short call cannot continue a cached state, so seeding one would only cost."""
        w, m, a = self.limits.window_length, self.memory, len(self.appliances)
        frac, iv = self.limits.max_invalid_fraction, self.limits.interval_ms
        horizon_known = np.zeros((len(misses), m), bool)
        windows, where = [], []
        for r, miss in enumerate(misses):
            g = miss.grid
            known = answerable(g.valid, w, frac)
            x = self.bundle.normalise(g.aggregate_w, g.valid)
            for k in range(max(w - 1, len(g) - m), len(g)):  # positions with a whole window, in memory
                slot = k - (len(g) - m)  # its place in the memory
                horizon_known[r, slot] = known[k]
                windows.append(x[k - w + 1 : k + 1])
                where.append((r, slot))
        prob = np.zeros((len(misses), m, a), np.float32)
        power = np.zeros((len(misses), m, a), np.float32)
        if windows:
            p, q = self.bundle.predict_windows(torch.from_numpy(np.stack(windows)))
            rows, slots = np.array(where).T
            power[rows, slots], prob[rows, slots] = p.cpu().numpy(), q.cpu().numpy()
        decided = decide_series(
            _tiled(self.rule, len(misses)),
            prob.transpose(1, 0, 2).reshape(m, -1),
            np.repeat(horizon_known.T, a, axis=1),
            final=False,
        )
        on, since_rel = decided.on[-1].reshape(-1, a), decided.since[-1].reshape(-1, a)
        answers: dict[int, Answer] = {}
        for r, miss in enumerate(misses):
            g = miss.grid
            first = g.end_ms // iv - m + 1
            since = np.where(since_rel[r] == NEVER, NEVER, since_rel[r] + first)
            missing = int(missing_in_windows(g.valid, w)[-1])
            answers[miss.index] = Answer(
                g.device_id,
                g.end_ms,
                float(g.aggregate_w[-1]),
                bool(horizon_known[r, -1]),
                missing,
                prob[r, -1],
                power[r, -1],
                on[r],
                self._since_ms(g.end_ms, since),
            )
        return answers

    def _fresh(self, misses: list[_Miss]) -> dict[int, Answer]:
        """The last ``history`` readings of every missed call in one sequence pass; cached unless older."""
        h, m, a = self.history, self.memory, len(self.appliances)
        b = len(misses)
        values = np.full((b, h), np.nan)
        known = np.zeros((b, h), bool)  # readings before those sent: not answered
        missing = np.zeros((b, h), np.int64)
        w, frac = self.limits.window_length, self.limits.max_invalid_fraction
        for r, miss in enumerate(misses):
            g = miss.grid
            n = min(len(g), h)
            values[r, h - n :] = g.aggregate_w[-n:]
            known[r, h - n :] = answerable(g.valid, w, frac)[-n:]
            missing[r, h - n :] = missing_in_windows(g.valid, w)[-n:]
        valid = ~np.isnan(values)
        x = torch.from_numpy(self.bundle.normalise(values.reshape(-1), valid.reshape(-1)).reshape(b, h))
        with torch.inference_mode():
            out, tails = self.cache.streams.seed(x, keep=m)  # (B, M, A) each
            power, prob = self.bundle.decoder.raw(out)
        # The rule over every device at once: appliance columns of all devices side by side.
        rule = _tiled(self.rule, b)
        prob_cols = prob.numpy().transpose(1, 0, 2).reshape(m, b * a)
        known_cols = np.repeat(known[:, -m:].T, a, axis=1)
        decided = decide_series(rule, prob_cols, known_cols)
        iv = self.limits.interval_ms
        ends = np.array([miss.grid.end_ms for miss in misses], np.int64)
        first = np.repeat(ends // iv - m + 1, a)  # slot of each column's first decided reading
        final = [
            np.where(arr[0] == NEVER, NEVER, arr[0] + first) if k >= 2 else arr[0]
            for k, arr in enumerate(decided.final.arrays())
        ]
        since = np.where(decided.since[-1] == NEVER, NEVER, decided.since[-1] + first).reshape(b, a)
        on = decided.on[-1].reshape(b, a)
        last_power, last_prob = power.numpy()[:, -1], prob.numpy()[:, -1]
        answers: dict[int, Answer] = {}
        stored = [r for r, miss in enumerate(misses) if miss.store]
        if stored:
            entries = [self.cache.claim(misses[r].grid.device_id) for r in stored]
            rows = self.cache.rows(entries)
            sel = np.array(stored)
            self.cache.streams.store(rows, ends[sel] // iv, [t[sel] for t in tails])
            slots = (ends[sel] // iv)[:, None] - np.arange(h - 1, -1, -1)
            self.cache.values[rows[:, None], slots % h] = values[sel]
            d = self.cache.decision
            for name, arr in zip(DecisionState.FIELDS, final, strict=True):
                getattr(d, name)[rows] = arr.reshape(b, a)[sel]
            self._remember(rows, last_prob[sel], last_power[sel], on[sel], since[sel], known[sel, -1])
            for entry, r in zip(entries, stored, strict=True):
                self._update_entry(entry, int(ends[r]), misses[r].grid.fill_state(), int(missing[r, -1]))
        for r, miss in enumerate(misses):
            answers[miss.index] = Answer(
                device_id=miss.grid.device_id,
                at_ms=int(ends[r]),
                aggregate_w=float(values[r, -1]),
                known=bool(known[r, -1]),
                missing=int(missing[r, -1]),
                prob=last_prob[r].copy(),
                power=last_power[r].copy(),
                on=on[r].copy(),
                since_ms=self._since_ms(int(ends[r]), since[r]),
            )
        return answers

    # ---- answers -------------------------------------------------------------------------------------------
    def detect(self, requests: Sequence[DeviceReadings]) -> list[DetectResponse]:
        """Which appliances are on at each device's newest reading, with probability and since when."""
        return [DetectResponse.model_validate(row) for row in self.detect_rows(requests)]

    def detect_rows(self, requests: Sequence[DeviceReadings]) -> list[dict[str, Any]]:
        """``detect`` as plain JSON-ready rows of the DetectResponse schema (what the service sends: no
        model object per device on the hot path; the tests check both forms agree)."""
        answers = self.states(requests)
        return [self._detect_row(a, self._keep(r)) for r, a in zip(requests, answers, strict=True)]

    def _keep(self, req: DeviceReadings) -> list[int]:
        """The model's appliance columns the request's device has (its ``appliances`` inventory)."""
        return inventory_columns(self.appliances, req.appliances)

    def _detect_row(self, a: Answer, keep: Sequence[int]) -> dict[str, Any]:
        at = _iso(a.at_ms)
        if not a.known:
            reason = unknown_reason(as_time(a.at_ms), not np.isnan(a.aggregate_w), a.missing, self.limits)
            return {
                "device_id": a.device_id,
                "model_version": self.model_version,
                "at": at,
                "status": "unknown",
                "reason": reason,
                "appliances": {},
            }
        since = [None if s is None else _iso(s) for s in a.since_ms]
        prob = [round(float(p), PROB_DECIMALS) for p in a.prob]
        on = [bool(o) for o in a.on]
        states = {self.appliances[j]: {"on": on[j], "prob_on": prob[j], "since": since[j]} for j in keep}
        return {
            "device_id": a.device_id,
            "model_version": self.model_version,
            "at": at,
            "status": "ok",
            "reason": None,
            "appliances": states,
        }

    def predict(self, requests: Sequence[DeviceReadings], newest_only: bool) -> list[PredictResponse]:
        """Watts per appliance: at the newest reading (the served state's watts), or of every reading."""
        if not newest_only:
            check_batch_size(requests, self.limits)
            check_series_size(requests, self.limits)
            return [_under(i, len(requests), self.predict_series, r) for i, r in enumerate(requests)]
        answers = self.states(requests)
        return [self._newest_prediction(r, a) for r, a in zip(requests, answers, strict=True)]

    def _newest_prediction(self, req: DeviceReadings, a: Answer) -> PredictResponse:
        keep = self._keep(req)
        if a.known:
            watts = np.where(a.on, a.power, 0.0).astype(np.float64)[keep]
            power: list[float | None] = list(watts.tolist())
            remainder: float | None = float(a.aggregate_w - watts.sum())
        else:
            power, remainder = [None] * len(keep), None
        return PredictResponse(
            device_id=req.device_id,
            model_version=self.model_version,
            start=as_time(a.at_ms),
            interval_s=self.limits.interval_s,
            power_w={self.appliances[j]: [p] for j, p in zip(keep, power, strict=True)},
            remainder_w=[remainder],
            predicted=[a.known],
        )

    def predict_series(self, req: DeviceReadings) -> PredictResponse:
        """/predict of every reading: ModelBundle.predict_series on the gridded readings (as evaluation:
        each reading's served answer, the history before the first reading counting as missing)."""
        if req.continues is not None:
            raise RequestError("continues", "predict of every reading takes the whole series, not a session")
        grid = to_grid(req, self.limits)
        check_series_size([req], self.limits)
        pred = self.bundle.predict_series(grid.aggregate_w, grid.valid)
        keep = self._keep(req)
        power = pred.power_w.astype(np.float64)[:, keep]  # (T, A') the device's appliances
        remainder = grid.aggregate_w - power.sum(axis=1)
        ok = pred.predicted
        return PredictResponse(
            device_id=grid.device_id,
            model_version=self.model_version,
            start=grid.time_of(0),
            interval_s=self.limits.interval_s,
            power_w={pred.appliances[j]: _nullable(power[:, k], ok) for k, j in enumerate(keep)},
            remainder_w=_nullable(remainder, ok),
            predicted=ok.tolist(),
        )

    def report(self, req: ReportRequest, params: ReportParams) -> dict[str, Any]:
        """POST /report: the readings on the grid (the gap policy above), predicted through
        ModelBundle.predict_series, then the report core of `airwatt report` (airwatt.report)."""
        from airwatt.report import report_for_series

        if req.continues is not None:
            raise RequestError("continues", "a report takes the period's readings, not a session")
        grid = to_grid(req, dataclasses.replace(self.limits, max_readings=self.cfg.max_report_readings))
        pred = self.bundle.predict_series(grid.aggregate_w, grid.valid)
        timestamps_ms = grid.start_ms + np.arange(len(grid), dtype=np.int64) * grid.interval_ms
        try:
            body = report_for_series(
                timestamps_ms,
                grid.aggregate_w,
                grid.valid,
                np.asarray(pred.power_w),
                np.asarray(pred.on, bool),
                appliances=self.bundle.appliances,
                interval_s=self.bundle.interval_s,
                timezone=req.timezone,
                params=params,
                period=req.period,
                device_id=req.device_id,
                inventory=req.appliances,
            )
        except DataError as e:  # e.g. totals that do not reconcile: these readings get no report
            raise RequestError("power_w", f"no report can be made of these readings: {e}") from None
        return {"model_version": self.model_version, **body}


@functools.lru_cache(maxsize=4096)  # the devices of a call share a few times
def _iso(ms: int) -> str:
    """An epoch-ms time as ISO 8601 UTC, as pydantic writes datetimes ('2026-01-05T00:00:00Z')."""
    text = as_time(ms).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _tiled(rule: DecisionRule, times: int) -> DecisionRule:
    """The rule for ``times`` devices' appliance columns side by side."""
    return DecisionRule(
        np.tile(rule.on_prob, times),
        np.tile(rule.off_prob, times),
        np.tile(rule.mid_prob, times),
        np.tile(rule.n_on, times),
        np.tile(rule.n_off, times),
        rule.memory,
    )


def _under(i: int, n: int, fn: Any, req: DeviceReadings) -> Any:
    """``fn(req)`` with a RequestError's field placed under ``devices[i]`` in a batch."""
    try:
        return fn(req)
    except RequestError as e:
        raise (e.under(f"devices[{i}]") if n > 1 else e) from None


def _nullable(values: np.ndarray, ok: np.ndarray) -> list[float | None]:
    return [float(v) if k else None for v, k in zip(values.tolist(), ok.tolist(), strict=True)]


def configure_threads(threads: int) -> None:
    """Intra-op threads of this process, torch's and NumPy's BLAS (one per worker: the workers already use
    the cores; NumPy's OpenBLAS would otherwise start one spinning thread per core in every worker)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")


def expected_history_passes(engine: Engine, requests: Sequence[DeviceReadings]) -> int:
    """About how many devices of a call will need a history pass (a cache miss with a whole history; a
    shorter call is answered from a few windows): a lock-free peek at the cache, used only to choose
    between the event loop and a thread (never for the answer)."""
    iv = engine.limits.interval_ms
    passes = 0
    for r in requests:
        if r.continues is not None or len(r.power_w) < engine.history:
            continue
        entry = engine.cache.entries.get(r.device_id)
        if entry is None or r.start is None:
            passes += 1
            continue
        end_ms = round(r.start.timestamp() * 1000) + (len(r.power_w) - 1) * iv
        passes += not 0 <= end_ms - entry.last_ms <= MAX_STEP_READINGS * iv
    return passes
