"""One appliance vocabulary, name normalisation, and per-appliance on/off parameters.

The on/off parameters for kettle, microwave, fridge, dishwasher and washing machine are the standard ones
(Kelly & Knottenbelt 2015; see ../shared/data/README.md). The others are AirWatt defaults chosen from the
appliances' typical power draw; they are marked ``source="airwatt"`` so reports can say which is which.
All durations are in seconds, never samples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from airwatt.errors import DataError


@dataclass(frozen=True)
class ApplianceSpec:
    name: str
    on_threshold_w: float
    min_on_s: float
    min_off_s: float
    max_w: float
    source: str = "airwatt"


_SPECS: tuple[ApplianceSpec, ...] = (
    # Standard parameters (Kelly & Knottenbelt).
    ApplianceSpec("kettle", 2000, 12, 0, 3100, "kelly2015"),
    ApplianceSpec("microwave", 200, 12, 30, 3000, "kelly2015"),
    ApplianceSpec("fridge", 50, 60, 12, 300, "kelly2015"),
    ApplianceSpec("dishwasher", 10, 1800, 1800, 2500, "kelly2015"),
    ApplianceSpec("washing_machine", 20, 1800, 160, 2500, "kelly2015"),
    # AirWatt defaults.
    ApplianceSpec("freezer", 50, 60, 12, 400),
    ApplianceSpec("air_conditioner", 100, 60, 60, 4000),
    ApplianceSpec("water_heater", 1000, 30, 30, 5000),
    ApplianceSpec("rice_cooker", 300, 60, 30, 1500),
    ApplianceSpec("induction_cooker", 200, 30, 30, 3500),
    ApplianceSpec("electric_stove", 200, 30, 30, 12000),
    ApplianceSpec("coffee_machine", 500, 12, 30, 3500),
    ApplianceSpec("tv", 30, 60, 30, 500),
    ApplianceSpec("lighting", 20, 60, 60, 3000),
    ApplianceSpec("fan", 15, 60, 30, 200),
    ApplianceSpec("electric_furnace", 200, 60, 60, 10000),
    ApplianceSpec("space_heater", 300, 60, 60, 3000),
    ApplianceSpec("waste_disposal", 200, 5, 5, 1500),
    ApplianceSpec("consumer_electronics", 20, 60, 30, 1000),
    ApplianceSpec("tumble_dryer", 100, 300, 120, 3000),
    ApplianceSpec("toaster", 500, 12, 12, 2000),
)

APPLIANCES: dict[str, ApplianceSpec] = {s.name: s for s in _SPECS}

# Names seen in public datasets and platform exports -> canonical name (after snake-casing).
_ALIASES: dict[str, str] = {
    "washer_dryer": "washing_machine",
    "washer": "washing_machine",
    "washingmachine": "washing_machine",
    "washing_machines": "washing_machine",
    "dish_washer": "dishwasher",
    "fridge_freezer": "fridge",
    "refrigerator": "fridge",
    "ac": "air_conditioner",
    "aircon": "air_conditioner",
    "air_conditioning": "air_conditioner",
    "electric_water_heater": "water_heater",
    "boiler": "water_heater",
    "ce_appliance": "consumer_electronics",
    "television": "tv",
    "lights": "lighting",
    "light": "lighting",
    "electric_space_heater": "space_heater",
    "waste_disposal_unit": "waste_disposal",
    "oven": "electric_stove",
    "stove": "electric_stove",
    "hob": "induction_cooker",
    "espresso_machine": "coffee_machine",
    # REFIT (raw release, refit_days/) and UK-DALE names.
    "chest_freezer": "freezer",
    "upright_freezer": "freezer",
    "combination_microwave": "microwave",
    "kettle_toaster": "kettle",  # one socket, mostly the kettle (REFIT house 21)
    "dryer": "tumble_dryer",
    "electric_heater": "space_heater",
    "lamp": "lighting",
    "computer": "consumer_electronics",
    "desktop_computer": "consumer_electronics",
    "computer_site": "consumer_electronics",
    "hifi": "consumer_electronics",
    "router": "consumer_electronics",
    "television_site": "tv",
}

# Sub-metered loads that are not one appliance of the vocabulary (or too rare to learn): importers skip their
# columns and list them in the provenance; their power stays in the aggregate, in the unexplained remainder.
NOT_IN_VOCABULARY: frozenset[str] = frozenset(
    {
        "blender",
        "bread_maker",
        "dehumidifier",
        "food_mixer",
        "kenwood_kmix",
        "plug_site_bedroom",
        "pond_pump",
        "unknown",
        "vivarium",
    }
)

_INSTANCE = re.compile(r"_\d+$")  # a second unit of one kind: freezer_1, freezer_2 (summed by importers)


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    s = re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower()
    return s


def _canonical(name: str) -> tuple[str, str]:
    """(snake-cased name, its canonical name) with aliases and a unit number (``_1``, ``_2``) resolved."""
    snake = _snake(name)
    if snake in _ALIASES or snake in APPLIANCES:
        return snake, _ALIASES.get(snake, snake)
    base = _INSTANCE.sub("", snake)
    return snake, _ALIASES.get(base, base)


def normalize_appliance(name: str, *, where: str | None = None) -> str:
    """Map a source's appliance name to the AirWatt vocabulary ("washer dryer" -> "washing_machine",
    "freezer_2" -> "freezer").

    Raises DataError naming the source (``where``) for a name outside the vocabulary.
    """
    snake, canonical = _canonical(name)
    if canonical not in APPLIANCES:
        raise DataError(
            f"unknown appliance name {name!r} (normalised {snake!r}); known: {', '.join(sorted(APPLIANCES))}",
            file=where,
        )
    return canonical


def vocabulary_name(name: str, *, where: str | None = None) -> str | None:
    """As normalize_appliance, but None for a load listed in NOT_IN_VOCABULARY (importers skip it)."""
    _, canonical = _canonical(name)
    return None if canonical in NOT_IN_VOCABULARY else normalize_appliance(name, where=where)


def inventory_columns(model: Sequence[str], inventory: Sequence[str] | None) -> list[int]:
    """The columns of a model's appliances that a device has: all of them without an inventory (None or
    empty: the device's appliances are not registered), else those named in ``inventory`` (registered
    appliances the model does not predict are not answered for)."""
    if not inventory:
        return list(range(len(model)))
    have = set(inventory)
    return [j for j, a in enumerate(model) if a in have]


def appliance_spec(name: str) -> ApplianceSpec:
    """The on/off parameters of a canonical appliance name."""
    try:
        return APPLIANCES[name]
    except KeyError:
        raise DataError(f"unknown appliance {name!r}; known: {', '.join(sorted(APPLIANCES))}") from None
