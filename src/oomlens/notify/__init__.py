"""Notifications of OOM kills (`oomlens watch --exec/--webhook/--desktop`).

`Notifier` runs each sink in its own thread behind a bounded queue, so the watcher
never waits for one: `core.py`. The sinks: `command.py` (a shell command),
`webhook.py` (an HTTP POST; urllib is loaded only here) and `desktop.py`
(notify-send in each graphical session).
"""

from oomlens.notify.command import exec_sink
from oomlens.notify.core import DeliveryFailed, Notice, Notifier, Sink
from oomlens.notify.desktop import desktop_sink
from oomlens.notify.webhook import webhook_sink

__all__ = ["DeliveryFailed", "Notice", "Notifier", "Sink", "desktop_sink", "exec_sink",
           "webhook_sink"]
