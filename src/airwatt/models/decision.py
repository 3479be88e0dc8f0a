"""The causal on/off decision rule of real-time models: the one place where a probability becomes a state.

Used by ``/detect`` (incrementally, per device: ``DecisionState.step``), and by ``predict_series`` of
real-time models, evaluation, reports and labeling (over a whole series: ``decide_series``). Both compute the
same function of the readings up to t; the tests check this, and that nothing after t changes the state at t.

Per appliance, with ``p_t`` the model's on-probability at reading t and ``known_t`` whether the service
answers reading t at all (the gap policy: the reading and enough of its window are present):

- reading t is *on-qualifying* when known and ``p_t >= on_prob``, *off-qualifying* when known and
  ``p_t < off_prob`` (``off_prob <= on_prob``: hysteresis; in between, neither);
- an *on-confirmation* happens at t when the last ``n_on = confirm_on_s / interval_s`` readings (at least
  one) were all on-qualifying; an off-confirmation likewise with ``n_off``;
- the rule remembers ``memory_s`` (M readings): only confirmations whose readings all lie in the last M
  readings count. The state at t is the kind of the latest such confirmation. With none (the probability
  sat in the hysteresis band, or readings were unknown, for the whole memory), the state is
  ``p_t >= (on_prob + off_prob) / 2``;
- ``since``: a switch is dated to the first reading of the run that confirmed it (a fridge that starts at
  10:00:00 with a 60 s confirmation is reported on from 10:01:00 with since 10:00:00). ``since`` is known
  when the confirmation of the previous (opposite) state is inside the memory; otherwise the state began
  before what the rule can see and ``since`` is null.

The memory is what makes the rule a function of a bounded history: the state at t depends only on the
probabilities of the last M readings, i.e. on the last ``window_length + M - 1`` readings. So a service that
is sent that much history answers the same whether it kept the device's state from an earlier call or
computes it afresh, and evaluation over a whole series scores exactly what the service answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

NEVER = np.iinfo(np.int64).min // 4  # a slot before any reading: "no such confirmation"


class ApplianceDecision(BaseModel):
    """The rule's parameters for one appliance (tuned on validation data, kept in the model bundle)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    on_prob: float = Field(gt=0, le=1, description="on-qualifying: probability at least this")
    off_prob: float = Field(ge=0, le=1, description="off-qualifying: probability below this (<= on_prob)")
    confirm_on_s: float = Field(ge=0, description="an on-run is confirmed once it lasted this long")
    confirm_off_s: float = Field(ge=0, description="an off-run is confirmed once it lasted this long")

    @model_validator(mode="after")
    def _band(self) -> ApplianceDecision:
        if self.off_prob > self.on_prob:
            raise ValueError(f"off_prob {self.off_prob} is above on_prob {self.on_prob}")
        return self


class DecisionSpec(BaseModel):
    """The rule of one model: its memory and each appliance's parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_s: float = Field(ge=0, description="how far back the rule reads (its state is a function of it)")
    appliances: dict[str, ApplianceDecision]

    @classmethod
    def plain(cls, appliances: Sequence[str], interval_s: float) -> DecisionSpec:
        """``prob_on >= 0.5`` at each reading on its own (no hysteresis, no confirmation, one reading of
        memory): the rule of bundles written before the decision rule existed."""
        one = ApplianceDecision(on_prob=0.5, off_prob=0.5, confirm_on_s=0.0, confirm_off_s=0.0)
        return cls(memory_s=interval_s, appliances=dict.fromkeys(appliances, one))


def readings_of(seconds: float, interval_s: float) -> int:
    """A duration as a number of readings, at least one (a run of n readings lasts n * interval_s)."""
    return max(1, round(seconds / interval_s))


@dataclass(frozen=True)
class DecisionRule:
    """A DecisionSpec compiled for one appliance order and interval: (A,) arrays, durations in readings."""

    on_prob: np.ndarray  # (A,) float64
    off_prob: np.ndarray  # (A,) float64
    mid_prob: np.ndarray  # (A,) float64: the state when no confirmation is in memory
    n_on: np.ndarray  # (A,) int64 >= 1
    n_off: np.ndarray  # (A,) int64 >= 1
    memory: int  # readings, >= max(n_on, n_off)

    @classmethod
    def of(cls, spec: DecisionSpec, appliances: Sequence[str], interval_s: float) -> DecisionRule:
        missing = [a for a in appliances if a not in spec.appliances]
        if missing:
            raise ValueError(f"the decision rule has no parameters for {', '.join(missing)}")
        params = [spec.appliances[a] for a in appliances]
        n_on = np.array([readings_of(p.confirm_on_s, interval_s) for p in params], np.int64)
        n_off = np.array([readings_of(p.confirm_off_s, interval_s) for p in params], np.int64)
        memory = readings_of(spec.memory_s, interval_s)
        longest = int(max(n_on.max(initial=1), n_off.max(initial=1)))
        if memory < longest:
            raise ValueError(
                f"decision memory_s {spec.memory_s:g} is shorter than the longest confirmation "
                f"({longest * interval_s:g} s): a confirmation must fit in the memory"
            )
        on = np.array([p.on_prob for p in params], np.float64)
        off = np.array([p.off_prob for p in params], np.float64)
        return cls(on, off, (on + off) / 2, n_on, n_off, memory)

    @property
    def n_appliances(self) -> int:
        return len(self.on_prob)


@dataclass
class DecisionState:
    """The rule's state after some reading, for B devices: (B, A) int64 arrays (slots are absolute)."""

    run_on: np.ndarray  # consecutive on-qualifying readings ending at the last one, capped at n_on
    run_off: np.ndarray
    last_on: np.ndarray  # slot of the latest on-confirmation (NEVER: none)
    last_off: np.ndarray
    on_start: np.ndarray  # first slot of the run of the first on-confirmation after last_off
    off_start: np.ndarray

    FIELDS = ("run_on", "run_off", "last_on", "last_off", "on_start", "off_start")

    @classmethod
    def blank(cls, devices: int, appliances: int) -> DecisionState:
        zeros = np.zeros((devices, appliances), np.int64)
        never = np.full((devices, appliances), NEVER, np.int64)
        return cls(zeros, zeros.copy(), never, never.copy(), never.copy(), never.copy())

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, f) for f in self.FIELDS)

    def step(
        self, rule: DecisionRule, prob: np.ndarray, known: np.ndarray, slot: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance every device by one reading at ``slot`` (B,); ``prob`` (B, A), ``known`` (B,) or (B, A).

        Returns the state at that reading: (B, A) bool on, and (B, A) int64 since (NEVER: null). The state
        of an unknown reading is computed but not meant to be reported (the service answers "unknown").
        """
        known = np.asarray(known, bool)
        if known.ndim == 1:
            known = known[:, None]
        t = np.asarray(slot, np.int64)[:, None]
        q_on = known & (prob >= rule.on_prob)
        q_off = known & (prob < rule.off_prob)
        self.run_on = np.where(q_on, np.minimum(self.run_on + 1, rule.n_on), 0)
        self.run_off = np.where(q_off, np.minimum(self.run_off + 1, rule.n_off), 0)
        c_on = self.run_on >= rule.n_on
        c_off = self.run_off >= rule.n_off
        # At most one of c_on, c_off holds (the qualifications exclude each other), so the order is free.
        self.on_start = np.where(c_on & (self.last_on <= self.last_off), t - rule.n_on + 1, self.on_start)
        self.last_on = np.where(c_on, t, self.last_on)
        self.off_start = np.where(c_off & (self.last_off <= self.last_on), t - rule.n_off + 1, self.off_start)
        self.last_off = np.where(c_off, t, self.last_off)
        return state_at(rule, t, prob, self.last_on, self.last_off, self.on_start, self.off_start)


def state_at(
    rule: DecisionRule,
    t: np.ndarray,
    prob: np.ndarray,
    last_on: np.ndarray,
    last_off: np.ndarray,
    on_start: np.ndarray,
    off_start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The state and since at reading(s) ``t`` from the confirmation slots (module docstring)."""
    on, on_in, off_in = _on_at(rule, t, prob, last_on, last_off)
    since = np.where(on & on_in & off_in, on_start, np.where(~on & on_in & off_in, off_start, NEVER))
    return on, since


def _on_at(
    rule: DecisionRule, t: np.ndarray, prob: np.ndarray, last_on: np.ndarray, last_off: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The state at reading(s) ``t``, and whether the last on and off confirmations lie in the memory."""
    on_in = last_on >= t - rule.memory + rule.n_on  # the confirmation's readings all lie in the memory
    off_in = last_off >= t - rule.memory + rule.n_off
    on = np.where(on_in | off_in, on_in & (~off_in | (last_on > last_off)), prob >= rule.mid_prob)
    return on, on_in, off_in


@dataclass(frozen=True)
class DecidedSeries:
    """``decide_series`` of one device: the state at every reading and the rule's state after the last."""

    on: np.ndarray  # (T, A) bool
    since: np.ndarray  # (T, A) int64 slots (first slot = ``first_slot``), NEVER: null
    final: DecisionState  # for B = 1: continue with DecisionState.step from slot first_slot + T


def _confirmations(qualifying: np.ndarray, n: np.ndarray) -> np.ndarray:
    """(T, A) bool: the last n[j] readings (inside the series) all qualify, per column."""
    t_len = len(qualifying)
    counts = np.zeros((t_len + 1, qualifying.shape[1]), np.int64)
    np.cumsum(qualifying, axis=0, out=counts[1:])
    out = np.zeros(qualifying.shape, bool)
    for j, k in enumerate(n.tolist()):
        if k <= t_len:
            out[k - 1 :, j] = counts[k:, j] - counts[: t_len + 1 - k, j] == k
    return out


def _latest(flags: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(T, A): the ``values`` at the latest row <= t where ``flags`` holds, NEVER before the first.
    ``values`` must not decrease down the rows (slots do)."""
    return np.maximum.accumulate(np.where(flags, values, NEVER), axis=0)


def _tail_run(qualifying: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """(A,): consecutive qualifying readings at the end of the series, capped per column."""
    t_len = len(qualifying)
    last_not = np.where(~qualifying, np.arange(t_len)[:, None], -1).max(axis=0, initial=-1)
    return np.minimum(t_len - 1 - last_not, cap)


def _confirmed(
    rule: DecisionRule, prob: np.ndarray, known: np.ndarray, first_slot: int
) -> tuple[np.ndarray, ...]:
    """prob, slots, the qualifying and confirmed readings and the latest confirmation slots (T, A)."""
    prob = np.asarray(prob)
    known = np.asarray(known, bool)
    if known.ndim == 1:
        known = known[:, None]
    slots = first_slot + np.arange(len(prob), dtype=np.int64)[:, None]  # (T, 1)
    q_on = known & (prob >= rule.on_prob)
    q_off = known & (prob < rule.off_prob)
    c_on = _confirmations(q_on, rule.n_on)
    c_off = _confirmations(q_off, rule.n_off)
    return prob, slots, q_on, q_off, c_on, c_off, _latest(c_on, slots), _latest(c_off, slots)


def decide_on(rule: DecisionRule, prob: np.ndarray, known: np.ndarray, first_slot: int = 0) -> np.ndarray:
    """``decide_series(...).on`` alone, (T, A) bool: without the since slots and the final state, about
    half the work (batch prediction needs only the states)."""
    prob, slots, _, _, _, _, last_on, last_off = _confirmed(rule, prob, known, first_slot)
    return _on_at(rule, slots, prob, last_on, last_off)[0]


def decide_series(
    rule: DecisionRule, prob: np.ndarray, known: np.ndarray, first_slot: int = 0, *, final: bool = True
) -> DecidedSeries:
    """The rule over a whole series at once (vectorised; equal to stepping ``DecisionState`` from blank).

    ``prob`` (T, A) on-probabilities, ``known`` (T,) or (T, A) whether each reading is answered at all;
    ``final=False`` skips the state after the last reading (``DecidedSeries.final`` is then blank).
    """
    prob, slots, q_on, q_off, c_on, c_off, last_on, last_off = _confirmed(rule, prob, known, first_slot)
    t_len, a = prob.shape
    before_on = np.vstack([np.full((1, a), NEVER, np.int64), last_on[:-1]])  # last_on before reading t
    before_off = np.vstack([np.full((1, a), NEVER, np.int64), last_off[:-1]])
    on_start = _latest(c_on & (before_on <= last_off), slots - rule.n_on + 1)
    off_start = _latest(c_off & (before_off <= last_on), slots - rule.n_off + 1)
    on, since = state_at(rule, slots, prob, last_on, last_off, on_start, off_start)
    if t_len == 0 or not final:
        state = DecisionState.blank(1, a)
    else:
        state = DecisionState(
            _tail_run(q_on, rule.n_on)[None],
            _tail_run(q_off, rule.n_off)[None],
            last_on[-1:].copy(),
            last_off[-1:].copy(),
            on_start[-1:].copy(),
            off_start[-1:].copy(),
        )
    return DecidedSeries(on, since, state)


def decision_spec(
    memory_s: float, params: Mapping[str, ApplianceDecision | Mapping[str, float]]
) -> DecisionSpec:
    """A DecisionSpec from plain values (tuning results, tests)."""
    return DecisionSpec(
        memory_s=memory_s,
        appliances={
            a: p if isinstance(p, ApplianceDecision) else ApplianceDecision(**p) for a, p in params.items()
        },
    )
