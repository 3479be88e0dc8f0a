"""Property-based fuzzing of the real service (`bentoml serve`) from its own OpenAPI document (schemathesis):
no 5xx, and every documented answer matches its schema.

Three kinds of request per operation, each with a fixed number of examples and Hypothesis's derandomised
(fixed) seed, so a run is repeatable and bounded:

- ``positive``: bodies the schema allows (most fail the body's own rules: 400);
- ``negative``: bodies the schema forbids (400);
- ``steered``: schemathesis's positive bodies made answerable-shaped, to reach the engine: each device in
  one time form (compact, timestamps or session), its readings repeated to a window or more, its first
  time the one schemathesis drew (any year from 1 to 9999, any offset), a recent one, or one in the first
  or the last hour ISO 8601 can write, its watts brought under serve.max_power_w, an inventory from the
  vocabulary. Everything else (ids, watts, nulls, cadences) is schemathesis's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance
from test_serving_http import served

from airwatt.appliances import APPLIANCES

EXAMPLES = {"positive": 25, "negative": 25, "steered": 60}  # per POST operation; GET: 3 positive
LENGTHS = (512, 540, 1000)  # readings per steered device: the window, the full history, more
VOCABULARY = sorted(APPLIANCES)
MAX_POWER_W = 100_000  # params.yaml serve.max_power_w: the raw cases test the bound, steered ones stay under
# the first and the last hour ISO 8601 can write
EDGES = st.datetimes(datetime.min, datetime(1, 1, 1, 1)) | st.datetimes(
    datetime(9999, 12, 31, 23), datetime.max
)
CHECKS = [not_a_server_error, response_schema_conformance]
pytestmark = pytest.mark.server  # `bentoml serve` (`make test-fast` leaves it out)


@pytest.fixture(scope="module")
def fuzz_server(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(tmp_path_factory.mktemp("fuzz"), str(trained_bundle)) as url:
        yield url


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


@st.composite
def _steered_device(draw: st.DrawFn, device: dict[str, Any]) -> dict[str, Any]:
    """``device`` (schemathesis's) in one time form with enough readings (module docstring)."""
    power = [v if v is None else v % MAX_POWER_W for v in device["power_w"]]  # plausible watts
    n = draw(st.sampled_from(LENGTHS))
    readings = (power * (n // len(power) + 1))[:n]
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5 * (n + 2))
    drawn = (
        _time(device.get("start"))
        or _time(device.get("continues"))
        or _time((device.get("timestamps") or [None])[0])
    )
    first = draw(st.sampled_from([t for t in (drawn, recent) if t is not None] + [None]))
    if first is None:  # an end of the range
        first = draw(EDGES).replace(tzinfo=UTC)
    out = {"device_id": device["device_id"]}
    if draw(st.booleans()):
        out["appliances"] = draw(st.lists(st.sampled_from(VOCABULARY), unique=True, max_size=4))
    form = draw(st.sampled_from(["compact", "timestamps", "session"]))
    if form == "timestamps":
        try:
            out["timestamps"] = [(first + timedelta(seconds=5 * i)).isoformat() for i in range(n)]
        except OverflowError:  # past year 9999: no such time can be written
            form = "compact"
    if form == "compact":
        interval = device.get("interval_s") if draw(st.booleans()) else 5
        out |= {"start": first.isoformat(), "interval_s": interval if interval is not None else 5}
    elif form == "session":
        out |= {"continues": first.isoformat()}
        readings = power  # the session form sends only the new readings
    return out | {"power_w": readings}


@st.composite
def steered(draw: st.DrawFn, operation: Any) -> Any:
    """A positive case of ``operation`` with its devices made answerable-shaped (module docstring)."""
    case = draw(operation.as_strategy())
    body = case.body
    if not isinstance(body, dict):
        return case
    devices = body.get("devices") if isinstance(body.get("devices"), list) else [body]
    shaped = [draw(_steered_device(d)) if isinstance(d, dict) and d.get("power_w") else d for d in devices]
    if "devices" in body:
        case.body = {**body, "devices": shaped}
    else:
        extra = {k: v for k, v in body.items() if k in ("newest_only", "period", "timezone")}
        case.body = {**shaped[0], **extra}
    return case


def _fuzz(
    url: str, operation: Any, strategy: Any, examples: int, statuses: Counter, failures: list[str]
) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,  # a fixed seed: the same cases every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=url, timeout=60)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as e:  # a check failed: collect, then report them all
            what = "; ".join(f"{type(x).__name__}: {str(x)[:300]}" for x in e.exceptions)
            body = json.dumps(case.body)[:300] if isinstance(case.body, dict | list) else ""
            failures.append(
                f"{operation.method.upper()} {operation.path} -> {response.status_code}: {what}\n{body}"
            )

    run()


def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_schema_violation(fuzz_server: str) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server}/docs.json")
    statuses: Counter = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/detect",
        "/detect_batch",
        "/predict",
        "/predict_batch",
        "/report",
    }
    for op in operations:
        if op.method.upper() != "POST" or op.path == "/model":
            _fuzz(fuzz_server, op, op.as_strategy(), 3, statuses, failures)
            continue
        _fuzz(fuzz_server, op, op.as_strategy(), EXAMPLES["positive"], statuses, failures)
        negative = op.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)
        _fuzz(fuzz_server, op, negative, EXAMPLES["negative"], statuses, failures)
        _fuzz(fuzz_server, op, steered(op), EXAMPLES["steered"], statuses, failures)
    print(f"fuzzed: {sum(statuses.values())} calls, answers {dict(sorted(statuses.items()))}")
    assert not failures, f"{len(failures)} failures; the first ones:\n" + "\n\n".join(failures[:5])
    assert not any(s >= 500 for s in statuses), statuses
    # the steered cases reached the engine: answers, and refusals of what it cannot answer
    assert statuses[200] >= 50 and statuses[422] >= 20, statuses
