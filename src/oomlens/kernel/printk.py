"""The /dev/kmsg text format's escaping: a rule of the kernel's, shared by the
live reader (system/kmsg.py) and the log normaliser (report/lines.py)."""

from __future__ import annotations

import re

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def unescape_devkmsg(text: str) -> str:
    """Undo devkmsg's `\\xHH` escaping. The kernel escapes every byte outside
    printable ASCII, and the backslash (kernel/printk/printk.c:
    msg_add_ext_text()), so a UTF-8 name arrives as one escape per byte: rebuild
    the bytes, then decode them."""
    if "\\x" not in text:
        return text
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8", "replace"))
    return raw.decode("utf-8", "replace")
