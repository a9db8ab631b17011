"""The desktop sink: a critical notification in every graphical session.

The watcher runs as root, outside any session, so it finds the sessions itself: a
user with a session bus (`/run/user/<uid>/bus`, made by systemd-logind and the
user's manager) and a process whose environment names a display. The second test
matters: a lingering user (rootless containers, user services) has a bus but no
notification server, and notify-send would fail there on every kill. notify-send
runs as that user (the bus refuses other users) with the bus address in its
environment; subprocess switches the ids in the child without a preexec hook,
which is not safe in a threaded process.
"""

from __future__ import annotations

import os
import pwd
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oomlens.notify.command import exit_text, run_with_timeout
from oomlens.notify.core import DeliveryFailed, Notice, Sink, one_line
from oomlens.system.procfs import pids, read_bytes
from oomlens.units import format_bytes

# notify-send returns once the server has the notification; a bus that does not
# answer within this long is not going to.
NOTIFY_SEND_TIMEOUT = 10.0
_DISPLAY_VARIABLES = (b"DISPLAY=", b"WAYLAND_DISPLAY=")
# Bytes a D-Bus address may carry unescaped (dbus-specification: Addresses).
_DBUS_SAFE = frozenset(b"-_/.\\*0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class Session:
    uid: int
    runtime_dir: str  # /run/user/<uid>, whose `bus` is the session bus socket


def describe(event: Mapping[str, Any]) -> tuple[str, str]:
    """The notification's summary and body. The body is notification markup
    (servers render <b> and &amp;), so text from the event is escaped in it."""
    from html import escape

    victim = event.get("victim")
    cgroup = event.get("cgroup")
    if victim:
        summary = f"OOM kill: {victim.get('comm')} ({victim.get('pid')})"
    elif event.get("kind") == "lost":
        summary = f"OOM kills the kernel log lost: {event.get('kills')}"
    else:
        summary = f"OOM kill in {cgroup}" if cgroup else "OOM kill"
    lines = [f"on {event.get('host')}"]
    if event.get("scope") == "memcg" and cgroup:
        lines.append(f"memory cgroup limit of {cgroup}")
    elif event.get("scope") == "global":
        lines.append("the system ran out of memory")
    if victim and victim.get("rss_kb") is not None:
        lines.append(f"RSS {format_bytes(victim['rss_kb'] * 1024)}")
    if event.get("main_finding"):
        lines.append(f"finding: {event['main_finding']}")
    if isinstance(event.get("id"), int):
        lines.append(f"oomlens history show {event['id']}")
    return one_line(summary), escape("\n".join(lines), quote=False)


def dbus_address(socket_path: str) -> str:
    """`unix:path=...` with the bytes D-Bus requires escaped as %XX."""
    escaped = "".join(chr(byte) if byte in _DBUS_SAFE else f"%{byte:02x}"
                      for byte in os.fsencode(socket_path))
    return f"unix:path={escaped}"


def graphical_sessions(proc_root: str, run_user: str) -> list[Session]:
    """Users with a session bus and a process that has a display. A non-root
    watcher can only notify its own user, so it looks for no one else."""
    try:
        names = os.listdir(run_user)
    except OSError:
        return []
    euid = os.geteuid()
    wanted = {int(name) for name in names
              if name.isdigit() and os.path.exists(f"{run_user}/{name}/bus")
              and (euid == 0 or int(name) == euid)}
    found = users_with_display(proc_root, wanted)
    return [Session(uid, f"{run_user}/{uid}") for uid in sorted(found)]


def users_with_display(proc_root: str, uids: set[int]) -> set[int]:
    """Which of `uids` own a process whose environment has DISPLAY or
    WAYLAND_DISPLAY. Stops as soon as every one is found."""
    found: set[int] = set()
    if not uids:
        return found
    for pid in sorted(pids(proc_root)):
        try:
            owner = os.stat(f"{proc_root}/{pid}").st_uid
            if owner not in uids or owner in found:
                continue
            environ = read_bytes(f"{proc_root}/{pid}/environ")
        except OSError:
            continue  # exited since the listing, or not ours to read
        if any(entry.startswith(_DISPLAY_VARIABLES) and not entry.endswith(b"=")
               for entry in environ.split(b"\0")):
            found.add(owner)
            if found == uids:
                break
    return found


def _user_options(uid: int) -> tuple[dict[str, str], dict[str, Any]]:
    """The user's environment basics, and the Popen options that run as them (none
    when we are them already: only root may switch)."""
    try:
        entry = pwd.getpwuid(uid)
        name, gid, home = entry.pw_name, entry.pw_gid, entry.pw_dir
        groups = os.getgrouplist(name, gid)
    except KeyError:  # a uid without a passwd entry: its own group, no others
        name, gid, home, groups = str(uid), uid, "/", []
    env = {"HOME": home, "USER": name, "LOGNAME": name}
    if uid == os.geteuid():
        return env, {}
    return env, {"user": uid, "group": gid, "extra_groups": groups}


def notify(notify_send: str, session: Session, summary: str, body: str) -> None:
    """Show one notification in one session; raises DeliveryFailed."""
    env, as_user = _user_options(session.uid)
    env.update({
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "XDG_RUNTIME_DIR": session.runtime_dir,
        "DBUS_SESSION_BUS_ADDRESS": dbus_address(f"{session.runtime_dir}/bus"),
    })
    argv = [notify_send, "--urgency=critical", "--app-name=oomlens", "--", summary, body]
    returncode, stderr = run_with_timeout(argv, b"", NOTIFY_SEND_TIMEOUT, env=env, cwd="/",
                                          **as_user)
    if returncode != 0:
        raise DeliveryFailed(exit_text(returncode) + (f": {stderr}" if stderr else ""))


def desktop_sink(*, proc_root: str = "/proc", run_user: str = "/run/user") -> Sink | None:
    """A sink that notifies every graphical session, or None when notify-send is
    not installed. With no session an event is done (nobody to tell is not a
    failure); a failure in one session does not keep the others from theirs."""
    import shutil

    notify_send = shutil.which("notify-send")
    if notify_send is None:
        return None

    def deliver(notice: Notice, stop: threading.Event) -> None:
        summary, body = describe(notice.event)
        problems: list[str] = []
        for session in graphical_sessions(proc_root, run_user):
            try:
                notify(notify_send, session, summary, body)
            except DeliveryFailed as err:
                problems.append(f"uid {session.uid}: {err}")
        if problems:
            raise DeliveryFailed("; ".join(problems))

    return Sink("desktop", deliver)
