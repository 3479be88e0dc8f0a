"""Where the simulated beta users live: timezones, mains voltage and daylight, weighted like AirWatt's beta
(mostly South-East Asia, some Europe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Region = Literal["sea", "europe"]


@dataclass(frozen=True)
class Zone:
    timezone: str
    region: Region
    nominal_v: float  # mains voltage (single phase)
    solar_noon_h: float  # local standard time of solar noon
    day_length_amp_h: float  # half the swing of day length over the year
    summer_time: bool  # clocks go forward one hour in summer
    weight: float  # share of the beta fleet


ZONES: tuple[Zone, ...] = (
    Zone("Asia/Singapore", "sea", 230.0, 13.1, 0.1, False, 0.14),
    Zone("Asia/Kuala_Lumpur", "sea", 230.0, 13.2, 0.2, False, 0.14),
    Zone("Asia/Bangkok", "sea", 230.0, 12.3, 0.9, False, 0.14),
    Zone("Asia/Jakarta", "sea", 220.0, 11.8, 0.2, False, 0.12),
    Zone("Asia/Ho_Chi_Minh", "sea", 220.0, 11.8, 0.7, False, 0.12),
    Zone("Asia/Manila", "sea", 230.0, 12.0, 0.9, False, 0.14),
    Zone("Europe/London", "europe", 230.0, 12.0, 4.3, True, 0.06),
    Zone("Europe/Berlin", "europe", 230.0, 12.6, 4.3, True, 0.05),
    Zone("Europe/Amsterdam", "europe", 230.0, 12.7, 4.4, True, 0.05),
    Zone("Europe/Madrid", "europe", 230.0, 13.9, 2.9, True, 0.04),
)
