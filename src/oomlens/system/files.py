"""Files oomlens owns (systemd drop-ins): read, replace atomically, remove."""

from __future__ import annotations

import contextlib
import os

from oomlens.system.procfs import translate_os_error


def read_optional(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise translate_os_error(err, path) from err


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` (a reader sees the old or the new file, never half):
    write a temporary file beside it, fsync, rename over it."""
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.oomlens-tmp-{os.getpid()}"
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise translate_os_error(err, path) from err


def remove(path: str, *, prune_directory: bool = False) -> None:
    """Remove `path` (gone already is fine), and with `prune_directory` its directory if
    that is now empty: for a drop-in's own `UNIT.d`, which oomlens made. Never for a
    shared directory (an empty `/etc/sysctl.d` is still the system's)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise translate_os_error(err, path) from err
    if prune_directory:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))
