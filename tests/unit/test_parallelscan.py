"""The parallel scan of a big file passes on exactly the lines, with exactly the
numbers, that the serial scan does, wherever the piece boundaries fall."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from oomlens import parallelscan
from oomlens.parallelscan import scan_file
from oomlens.report.scan import scan

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "oomanalyser"
REPORTS = [p.read_bytes() for p in sorted(CORPUS.glob("*.txt"))]


def _log(seed: int, *, trailing_newline: bool) -> bytes:
    rng = random.Random(seed)
    parts = []
    for _ in range(40):
        parts.append(b"Aug 12 03:54:03 h sshd[1]: noise line %d\n" % rng.randrange(10**6)
                     * rng.randrange(0, 30))
        if rng.random() < 0.4:
            parts.append(rng.choice(REPORTS).rstrip(b"\n") + b"\n")
        if rng.random() < 0.1:
            parts.append(b"x" * rng.randrange(100, 5000) + b"\n")  # longer than a chunk
    data = b"".join(parts)
    return data if trailing_newline else data + b"Killed process 9 (tail)"


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("workers", [2, 3, 4])
def test_same_lines_as_the_serial_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, workers: int
) -> None:
    monkeypatch.setattr(parallelscan, "CHUNK", 1024)  # many chunks, lines longer than one
    data = _log(seed, trailing_newline=seed % 2 == 0)
    path = tmp_path / "big.log"
    path.write_bytes(data)
    serial = list(scan([data[i : i + 1024] for i in range(0, len(data), 1024)]))
    assert scan_file(str(path), len(data), workers) == serial
