"""Fuzz target for the report path (scan -> normalise -> parse -> diagnose -> JSON).

`check(data)` must never raise for any bytes. The unit tests drive it with
hypothesis (tests/unit/report/test_robustness.py); for a long coverage-guided run
install atheris and run this file: `python tests/fuzz/fuzz_report.py [corpus dir]`.
"""

from __future__ import annotations

import json
import sys

from oomlens.report.diagnose import diagnose
from oomlens.report.pipeline import events_in
from oomlens.report.schema import event_json


def check(data: bytes, chunk: int = 4096) -> None:
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    previous = None
    for event in events_in(chunks, "fuzz", year=2025, until_month=6, boot_time=1.7e9):
        document = event_json(event, diagnose(event, previous))
        json.dumps(document)
        previous = event


if __name__ == "__main__":
    import atheris  # type: ignore[import-not-found]

    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
