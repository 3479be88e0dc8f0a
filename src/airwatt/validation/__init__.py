"""Dataset validation with Great Expectations 1.x: suites on readings, ground truth and labels.

`validate_dataset` derives small per-row and per-device frames with pandas (checks.py), judges them with GX's
built-in expectations (suites.py, runner.py) and reports checks, devices and example rows (result.py).
"""

from airwatt.validation.result import CheckOutcome, ExampleRow, ExpectationOutcome, ValidationResult
from airwatt.validation.suites import CHECKS
from airwatt.validation.validate import publish, validate_dataset

__all__ = [
    "CHECKS",
    "CheckOutcome",
    "ExampleRow",
    "ExpectationOutcome",
    "ValidationResult",
    "publish",
    "validate_dataset",
]
