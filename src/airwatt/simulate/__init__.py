"""The fleet simulator: the embedded default data source (homes, cafes and restaurants at 5 s)."""

from airwatt.simulate.fleet import fleet_sites, simulate_fleet
from airwatt.simulate.plot import plot_device_day

__all__ = ["fleet_sites", "plot_device_day", "simulate_fleet"]
