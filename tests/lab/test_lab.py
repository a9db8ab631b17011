"""The kernel lab, seen from the host: one guest boot runs every guest test
(tests/lab/guest) and each of them is reported here as its own test.

The host-side tests are generated from the guest test files (one per test function;
parametrized guest tests are judged together), so adding a guest test adds a line
to the host's summary. A guest that does not boot fails every one of them with the
guest's console; no QEMU here skips them (fails with OOMLENS_REQUIRE_KERNEL_TESTS=1).
"""

from __future__ import annotations

import ast
from pathlib import Path

import labvm
import pytest

pytestmark = pytest.mark.lab
GUEST_DIR = Path(__file__).resolve().parent / "guest"


def guest_tests() -> list[tuple[str, str]]:
    """(module stem, function) of every `test_*` function in tests/lab/guest."""
    found = []
    for path in sorted(GUEST_DIR.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        found += [(path.stem, node.name) for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    return found


def _require_run(run: labvm.LabResult) -> None:
    if not run.booted or run.error is not None or not run.cases:
        pytest.fail(run.describe_failure(), pytrace=False)


def test_guest_boots_and_runs_pytest(lab_run: labvm.LabResult) -> None:
    _require_run(lab_run)
    assert lab_run.release and lab_run.release != "", "guest kernel release unknown"
    assert lab_run.boot_s is not None
    print(lab_run.summary())


@pytest.mark.parametrize(("module", "function"), guest_tests(),
                         ids=[f"{m}::{f}" for m, f in guest_tests()])
def test_in_guest(lab_run: labvm.LabResult, module: str, function: str) -> None:
    _require_run(lab_run)
    cases = [c for c in lab_run.cases
             if c.classname.rsplit(".", 1)[-1] == module and c.function == function]
    if not cases:
        pytest.fail(f"{module}::{function} did not run in the guest\n"
                    + lab_run.describe_failure(), pytrace=False)
    bad = [c for c in cases if c.outcome in ("failed", "error")]
    if bad:
        pytest.fail("\n\n".join(f"in the guest ({lab_run.release}): {c.name} {c.outcome}: "
                                f"{c.message}\n{c.details}" for c in bad), pytrace=False)
    if all(c.outcome == "xfailed" for c in cases):
        pytest.xfail(f"in the guest: {cases[0].message}")
    if all(c.outcome in ("skipped", "xfailed") for c in cases):
        labvm.skip_or_fail(f"skipped in the guest: {cases[0].message}")
