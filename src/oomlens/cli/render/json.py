"""JSON output: one document per command, stable key order, schema names in docs/json.md."""

from __future__ import annotations

import json
from typing import Any, TextIO


def write_json(stream: TextIO, document: Any) -> None:
    json.dump(document, stream, indent=2, ensure_ascii=False)
    stream.write("\n")
