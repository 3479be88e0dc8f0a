"""The Label Studio labeling config for appliance on/off labels, generated from a dataset's manifest.

One ``<TimeSeries>`` per task, its time axis in epoch milliseconds (``timeFormat="%Q"``, so region start and
end come back as epoch milliseconds), the aggregate power as the first channel and, for reviewers, one channel
per sub-metered appliance. One ``<TimeSeriesLabels>`` control with one label per appliance of the dataset's
inventory; a region is one on-interval of one appliance.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from airwatt.appliances import APPLIANCES
from airwatt.dataset.schema import Manifest
from airwatt.errors import DataError

LABELS_CONTROL = "appliance"  # <TimeSeriesLabels name=...>
SERIES_OBJECT = "ts"  # <TimeSeries name=...>, also the task data key holding the columns
TIME_COLUMN = "time_ms"
AGGREGATE_COLUMN = "aggregate_w"

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def inventory(manifest: Manifest) -> list[str]:
    """The appliances of the device inventories (vocabulary order); the manifest's if none listed."""
    listed = {a for d in manifest.devices for a in d.appliances} or set(manifest.appliances)
    names = [a for a in APPLIANCES if a in listed]
    if not names:
        raise DataError(f"dataset {manifest.name!r} lists no appliances: nothing to label")
    return names


def submeter_channels(manifest: Manifest) -> list[str]:
    """Appliances with sub-metered power at some device (shown to reviewers), in vocabulary order."""
    if not any(d.has_ground_truth for d in manifest.devices):
        return []
    return [a for a in APPLIANCES if a in manifest.appliances]


def channel_column(appliance: str) -> str:
    return f"{appliance}_w"


def build_label_config(appliances: list[str], submetered: list[str]) -> str:
    """The XML labeling config: header, labels (one per appliance), the time series and its channels."""
    labels = "\n".join(
        f"    <Label value={quoteattr(a)} background={quoteattr(_COLOURS[i % len(_COLOURS)])}/>"
        for i, a in enumerate(appliances)
    )
    channels = [
        f'    <Channel column="{AGGREGATE_COLUMN}" legend="aggregate" units="W" displayFormat=",.0f" '
        'strokeColor="#222222"/>'
    ]
    channels += [
        f'    <Channel column="{channel_column(a)}" legend={quoteattr(a + " (sub-meter)")} units="W" '
        f'displayFormat=",.0f" strokeColor={quoteattr(_COLOURS[i % len(_COLOURS)])}/>'
        for i, a in enumerate(submetered)
    ]
    return "\n".join(
        [
            "<View>",
            '  <Header value="$header"/>',
            f'  <TimeSeriesLabels name="{LABELS_CONTROL}" toName="{SERIES_OBJECT}" choice="single">',
            labels,
            "  </TimeSeriesLabels>",
            f'  <TimeSeries name="{SERIES_OBJECT}" value="${SERIES_OBJECT}" valueType="json" '
            f'timeColumn="{TIME_COLUMN}" timeFormat="%Q" timeDisplayFormat="%Y-%m-%d %H:%M:%S" '
            'overviewChannels="aggregate_w">',
            *channels,
            "  </TimeSeries>",
            "</View>",
            "",
        ]
    )


def label_config_for(manifest: Manifest) -> str:
    """The labeling config of a dataset: its inventory as labels, sub-meter channels where it has any."""
    return build_label_config(inventory(manifest), submeter_channels(manifest))
