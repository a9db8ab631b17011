"""The daemons' decision logs on stdout (enforce, guard): one JSON object per line
with `--json`, else `<local ISO time> <description>`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

Log = Callable[[dict[str, Any]], None]


def event_log(stream: TextIO, schema: str, describe: Callable[[dict[str, Any]], str],
              as_json: bool, *, time_key: str = "time") -> Log:
    """`time_key` names the wall-clock field (guard's entries have a `time` of
    their own: the monotonic instant of a signal)."""
    def log(entry: dict[str, Any]) -> None:
        now = datetime.now().astimezone().isoformat(timespec="milliseconds")
        if as_json:
            stream.write(json.dumps({"schema": schema, time_key: now, **entry}) + "\n")
        else:
            stream.write(f"{now} {describe(entry)}\n")
        stream.flush()
    return log
