"""The notifications `--exec`, `--webhook` and `--desktop` ask for, shared by
`watch` and `guard` (imported lean: each sink loads what it needs when used)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oomlens.notify import Notifier


def notifier_of(args: argparse.Namespace, proc_root: str,
                log: Callable[[dict[str, Any]], None]) -> Notifier | None:
    """The notifications --exec, --webhook and --desktop ask for (watch and guard)."""
    if not (args.exec_command or args.webhook or args.desktop):
        return None
    from oomlens.notify import Notifier, desktop_sink, exec_sink, webhook_sink

    sinks = [exec_sink(args.exec_command, args.exec_timeout)] if args.exec_command else []
    sinks += [webhook_sink(url) for url in args.webhook]
    if args.desktop:
        desktop = desktop_sink(proc_root=proc_root)
        if desktop is None:
            log({"event": "no_desktop", "message": "notify-send is not installed"})
        else:
            sinks.append(desktop)
    if not sinks:
        return None
    return Notifier(sinks, log=lambda text: log({"event": "notify", "message": text}))
