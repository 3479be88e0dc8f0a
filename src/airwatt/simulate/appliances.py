"""The appliance models by canonical name: each turns a site and a random generator into a Load."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from airwatt.simulate import cooling, household, kitchen
from airwatt.simulate.loads import Load
from airwatt.simulate.sites import SiteContext

ApplianceModel = Callable[[SiteContext, np.random.Generator], Load]

MODELS: dict[str, ApplianceModel] = {
    "fridge": cooling.fridge,
    "freezer": cooling.freezer,
    "air_conditioner": cooling.air_conditioner,
    "fan": cooling.fan,
    "kettle": kitchen.kettle,
    "microwave": kitchen.microwave,
    "rice_cooker": kitchen.rice_cooker,
    "induction_cooker": kitchen.induction_cooker,
    "coffee_machine": kitchen.coffee_machine,
    "washing_machine": household.washing_machine,
    "water_heater": household.water_heater,
    "tv": household.tv,
    "lighting": household.lighting,
}
