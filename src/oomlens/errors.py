"""The errors oomlens raises, each mapped to one exit status at the CLI boundary.

Readers in `system/` translate OS errors into these at one place
(`system/procfs.py: translate_os_error`), so no caller ever sees a raw errno.
"""

from __future__ import annotations


class OomlensError(Exception):
    """Base of every error oomlens reports to a user."""


class UsageError(OomlensError):
    """The user asked for something that cannot be (bad option value, unknown name)."""


class NotFound(OomlensError):
    """A named object (pid, cgroup, file) does not exist."""


class ProcessGone(NotFound):
    """The process exited (or never existed) while we looked at it."""

    def __init__(self, pid: int, comm: str | None = None) -> None:
        self.pid = pid
        self.comm = comm
        name = f" ({comm})" if comm else ""
        super().__init__(f"process {pid}{name} does not exist (it may have exited)")


class AccessDenied(OomlensError):
    """The kernel refused a read or write (EACCES/EPERM)."""

    def __init__(self, path: str, pid: int | None = None, hint: str = "") -> None:
        self.path = path
        self.pid = pid
        self.hint = hint
        tail = f": {hint}" if hint else ""
        super().__init__(f"permission denied on {path}{tail}")


class Unsupported(OomlensError):
    """This system lacks what the command needs (no procfs, no memory cgroup, no PSI)."""
