"""Argument types shared by the subcommands' parsers: numbers, times, values."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

SORT_KEYS = ("rank", "pid", "rss", "swap", "adj", "oom_score", "user", "comm")
"""What `ls` and `top` sort by (`--sort`, top's `s` key)."""


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(positive_float(text))


def moment(text: str) -> datetime:
    """`2025-08-12`, `2025-08-12T03:54`, `2025-08-12 03:54:03+02:00`, or a time ago:
    `30m`, `2h`, `7d`, `1w`; `today`, `yesterday`. Without a zone: local time."""
    now = datetime.now().astimezone()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[:-1].isdigit() and text[-1:] in units:
        return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if text in ("today", "yesterday"):
        return midnight - timedelta(days=1 if text == "yesterday" else 0)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use 2025-08-12, 2025-08-12T03:54, 2h, 7d, today)"
        ) from None
    return when if when.tzinfo is not None else when.astimezone()
