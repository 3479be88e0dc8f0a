"""UTC timestamps <-> epoch milliseconds, without pandas' timezone-dropping deprecation paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from airwatt.dataset.schema import PANDAS_TIMESTAMP_DTYPE

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def iso(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC ('2026-01-05T00:00:00+00:00', prepare's split.json format)."""
    return (_EPOCH + ms * _MS).isoformat()


def epoch_ms(text: str) -> int:
    """ISO 8601 (a naive one is UTC) as epoch milliseconds."""
    t = datetime.fromisoformat(text)
    return ((t if t.tzinfo is not None else t.replace(tzinfo=UTC)) - _EPOCH) // _MS


def to_epoch_ms(s: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Timezone-aware timestamps as int64 milliseconds since the epoch (UTC)."""
    idx = pd.DatetimeIndex(s)
    if idx.tz is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return idx.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ms]").astype(np.int64)


def from_epoch_ms(ms: np.ndarray) -> pd.DatetimeIndex:
    """int64 epoch milliseconds as datetime64[ms, UTC] (assign to a column positionally)."""
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True)).astype(
        PANDAS_TIMESTAMP_DTYPE
    )
