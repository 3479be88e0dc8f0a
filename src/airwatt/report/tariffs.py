"""What the measured energy of each grid slot costs under a tariff of params.yaml (``report.tariff``).

- **flat**: every kWh at one price.
- **time_of_use**: the price of the period holding the slot's start in the device's local wall-clock time
  (periods are HH:MM windows, ``end < start`` wraps past midnight); ``price_per_kwh`` outside every period.
- **tiered**: block prices by the energy used so far in the device's local calendar month. Slots are
  costed in time order, so the slot that crosses a block end pays both prices for its two parts; the count
  restarts at each local month. Only the energy in the data is counted: give the data from the start of
  the billing month for an exact bill.

Appliances are costed at their slot's effective price (slot cost / slot energy): their costs plus the
remainder's equal the slot's cost.
"""

from __future__ import annotations

import numpy as np

from airwatt.config import FlatTariff, Tariff, TieredTariff, TimeOfUseTariff

SECONDS_PER_DAY = 86_400


def clock_s(hhmm: str) -> int:
    """'HH:MM' -> seconds since local midnight."""
    return int(hhmm[:2]) * 3600 + int(hhmm[3:5]) * 60


def minute_prices(tariff: TimeOfUseTariff) -> np.ndarray:
    """(1440,) price per kWh of each minute of the local day."""
    prices = np.full(1440, tariff.price_per_kwh, dtype=np.float64)
    for p in tariff.periods:
        start, end = clock_s(p.start) // 60, clock_s(p.end) // 60
        minutes = np.arange(start, end if end > start else end + 1440) % 1440
        prices[minutes] = p.price_per_kwh
    return prices


def tiered_cumulative_cost(tariff: TieredTariff, used_kwh: np.ndarray) -> np.ndarray:
    """Cost of the first ``used_kwh`` of a month (piecewise linear; negative use costs nothing)."""
    ends = np.array([b.up_to_kwh for b in tariff.blocks[:-1]], dtype=np.float64)
    prices = np.array([b.price_per_kwh for b in tariff.blocks], dtype=np.float64)
    x = np.concatenate(([0.0], ends))
    y = np.concatenate(([0.0], np.cumsum(np.diff(x) * prices[:-1])))
    used = np.maximum(used_kwh, 0.0)
    inside = np.interp(used, x, y)
    return np.where(used > x[-1], y[-1] + (used - x[-1]) * prices[-1], inside)


def slot_costs(
    tariff: Tariff, energy_kwh: np.ndarray, second_of_day: np.ndarray, month: np.ndarray
) -> np.ndarray:
    """(T,) cost of each slot's measured energy; slots in time order, with their local second of the day
    and local month (any integer or datetime64 code, equal within a month)."""
    if isinstance(tariff, FlatTariff):
        return energy_kwh * tariff.price_per_kwh
    if isinstance(tariff, TimeOfUseTariff):
        return energy_kwh * minute_prices(tariff)[(second_of_day // 60).astype(np.int64) % 1440]
    if isinstance(tariff, TieredTariff):
        return _tiered_slot_costs(tariff, energy_kwh, month)
    raise TypeError(f"unknown tariff {tariff!r}")


def _tiered_slot_costs(tariff: TieredTariff, energy_kwh: np.ndarray, month: np.ndarray) -> np.ndarray:
    if len(energy_kwh) == 0:
        return np.zeros(0)
    month_starts = np.flatnonzero(np.concatenate(([True], month[1:] != month[:-1])))
    total = np.cumsum(energy_kwh)
    before_month = np.repeat(
        total[month_starts] - energy_kwh[month_starts], np.diff([*month_starts, len(total)])
    )
    used_after = total - before_month  # kWh used in the month up to and including each slot
    return tiered_cumulative_cost(tariff, used_after) - tiered_cumulative_cost(
        tariff, used_after - energy_kwh
    )


def max_price(tariff: Tariff) -> float:
    """The highest price per kWh (to state a cost tolerance from an energy tolerance)."""
    if isinstance(tariff, FlatTariff):
        return tariff.price_per_kwh
    if isinstance(tariff, TimeOfUseTariff):
        return max([tariff.price_per_kwh, *(p.price_per_kwh for p in tariff.periods)])
    return max(b.price_per_kwh for b in tariff.blocks)
