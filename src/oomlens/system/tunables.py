"""The kernel's knobs and facilities behind an OOM, as read from /proc and /sys: the
doctor's sysctls (read and written), the boot command line, whether a crash kernel
is loaded, swap areas, zram and zswap, whether PSI works, and the controls of one
memory cgroup that `system/memcg.py` does not read (memory.high, memory.oom.group,
under_oom, inactive file pages).

Readers take an explicit proc root and sys root so tests point them at a fake tree.
A file that does not exist is a fact (None, or an empty tuple), not an error.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass

from oomlens.errors import AccessDenied, OomlensError
from oomlens.system.memcg import MemcgMount
from oomlens.system.meminfo import OOM_SYSCTLS, parse_flat
from oomlens.system.procfs import read_text, translate_os_error

# What the doctor reads on top of the snapshot's OOM_SYSCTLS.
EXTRA_SYSCTLS = ("vm/overcommit_kbytes", "vm/watermark_scale_factor")
DOCTOR_SYSCTLS = (*OOM_SYSCTLS, *EXTRA_SYSCTLS)


def sysctl_path(proc_root: str, name: str) -> str:
    """`vm.swappiness` -> `<proc_root>/sys/vm/swappiness`, as sysctl(8) maps names."""
    return os.path.join(proc_root, "sys", *name.split("."))


def read_sysctl(proc_root: str, name: str) -> str | None:
    """The value as the kernel prints it, whitespace-trimmed; None if absent."""
    path = sysctl_path(proc_root, name)
    try:
        return read_text(path).strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise translate_os_error(err, path) from err


def write_sysctl(proc_root: str, name: str, value: str) -> None:
    """Write a live value (as `sysctl -w` does). The kernel answers EINVAL for a value
    out of its range (kernel/sysctl.c: proc_dointvec_minmax())."""
    path = sysctl_path(proc_root, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, f"{value}\n".encode("ascii"))
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno == errno.EINVAL:
            raise OomlensError(f"the kernel refused {name} = {value}: out of its range") \
                from err
        if err.errno == errno.ENOENT:
            raise OomlensError(f"no sysctl {name} on this kernel ({path})") from err
        raise translate_os_error(err, path) from err


def parse_sysctl_conf(text: str) -> dict[str, str]:
    """`key = value` lines of a sysctl.d(5) file, the last setting of a key winning;
    keys in dotted form (`vm/swappiness` is `vm.swappiness`); a leading `-` (ignore
    errors) is dropped; `#` and `;` start comments."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip().lstrip("-").replace("/", ".")] = value.strip()
    return out


def settings_after(sysctl_dir: str, file_name: str,
                   keys: Iterable[str]) -> list[tuple[str, str, str]]:
    """(path, key, value) of the files in `sysctl_dir` read after `file_name` (sysctl.d
    files apply in the order of their names) that set one of `keys`: at boot their
    value wins."""
    wanted = set(keys)
    try:
        names = sorted(n for n in os.listdir(sysctl_dir) if n.endswith(".conf") and n > file_name)
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(sysctl_dir, name)
        try:
            settings = parse_sysctl_conf(read_text(path))
        except OSError:
            continue
        found += [(path, key, value) for key, value in settings.items() if key in wanted]
    return found


def read_cmdline(proc_root: str) -> str | None:
    try:
        return read_text(os.path.join(proc_root, "cmdline")).strip()
    except OSError:
        return None


def boot_parameter(cmdline: str | None, key: str) -> str | None:
    """The value of `key=` on the kernel command line (the last one wins, as the
    kernel's early_param parsing sees them); "" for a bare `key`; None if absent.
    Everything after a lone `--` goes to init, not the kernel."""
    if not cmdline:
        return None
    found = None
    for word in cmdline.split():
        if word == "--":
            break
        name, sep, value = word.partition("=")
        if name == key:
            found = value if sep else ""
    return found


def read_kexec_crash_loaded(sys_root: str) -> bool | None:
    """Whether a crash (kdump) kernel is loaded (kernel/ksysfs.c:
    kexec_crash_loaded_show()); None without CONFIG_KEXEC_CORE (no file)."""
    try:
        return read_text(os.path.join(sys_root, "kernel", "kexec_crash_loaded")).strip() == "1"
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class SwapArea:
    """One line of /proc/swaps (mm/swapfile.c: swap_show()), sizes in KiB."""

    filename: str
    type: str  # "partition" or "file"
    size_kib: int
    used_kib: int
    priority: int


def parse_swaps(text: str) -> tuple[SwapArea, ...]:
    """The filename is escaped like mountinfo (seq_file_path: space, tab, newline,
    backslash as octal), so splitting on whitespace is safe."""
    areas = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            name = fields[0].replace("\\040", " ").replace("\\011", "\t") \
                .replace("\\012", "\n").replace("\\134", "\\")
            areas.append(SwapArea(name, fields[1], int(fields[2]), int(fields[3]),
                                  int(fields[4])))
    return tuple(areas)


def read_swaps(proc_root: str) -> tuple[SwapArea, ...] | None:
    """The active swap areas; None without CONFIG_SWAP (no /proc/swaps)."""
    try:
        return parse_swaps(read_text(os.path.join(proc_root, "swaps")))
    except OSError:
        return None


def read_zswap_enabled(sys_root: str) -> bool | None:
    """zswap's `enabled` module parameter (mm/zswap.c); None without zswap."""
    try:
        value = read_text(os.path.join(sys_root, "module", "zswap", "parameters", "enabled"))
    except OSError:
        return None
    return value.strip() in ("Y", "1")


@dataclass(frozen=True, slots=True)
class ZramDevice:
    """A zram block device with a size (drivers/block/zram/zram_drv.c): `disksize`
    and, from `mm_stat`, the data stored and the memory it takes compressed."""

    name: str
    disksize_bytes: int
    orig_data_bytes: int | None
    compr_data_bytes: int | None


def read_zram(sys_root: str) -> tuple[ZramDevice, ...]:
    """Every initialised zram device (disksize > 0)."""
    block = os.path.join(sys_root, "block")
    try:
        names = sorted(n for n in os.listdir(block) if n.startswith("zram"))
    except OSError:
        return ()
    found = []
    for name in names:
        directory = os.path.join(block, name)
        try:
            size = int(read_text(os.path.join(directory, "disksize")))
        except (OSError, ValueError):
            continue
        if size <= 0:
            continue
        orig = compr = None
        try:
            fields = read_text(os.path.join(directory, "mm_stat")).split()
            orig, compr = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):
            pass
        found.append(ZramDevice(name, size, orig, compr))
    return tuple(found)


def psi_problem(proc_root: str) -> str | None:
    """Why memory PSI cannot be read here, or None when it can: no
    /proc/pressure/memory means a kernel without CONFIG_PSI; EOPNOTSUPP on read
    means PSI disabled at boot (`psi=0`, or CONFIG_PSI_DEFAULT_DISABLED without
    `psi=1`; kernel/sched/psi.c: psi_show())."""
    path = os.path.join(proc_root, "pressure", "memory")
    try:
        read_text(path)
    except FileNotFoundError:
        return f"{path} does not exist: the kernel is built without CONFIG_PSI"
    except OSError as err:
        if err.errno == errno.EOPNOTSUPP:
            return f"reading {path} fails with EOPNOTSUPP: PSI is disabled at boot"
        return f"cannot read {path}: {err.strerror}"
    return None


@dataclass(frozen=True, slots=True)
class MemcgControls:
    """What one memory cgroup's files say beyond system/memcg.py's Memcg. None: the
    file does not exist in this version (or this kernel). `high_bytes` None also
    means `max` (no memory.high)."""

    usage_bytes: int | None  # memory.current (v2), memory.usage_in_bytes (v1)
    high_bytes: int | None
    high_events: int | None  # v2 memory.events `high`: times it went over memory.high
    oom_group: bool | None  # v2 memory.oom.group
    under_oom: bool | None  # v1 memory.oom_control `under_oom`: tasks waiting now
    inactive_file_bytes: int | None  # memory.stat (v1: total_inactive_file)


def read_memcg_controls(mount: MemcgMount, path: str) -> MemcgControls:
    """Read the controls of the cgroup at `path`; missing files stay None."""
    directory = mount.fs_path(path)

    def text(name: str) -> str | None:
        try:
            return read_text(os.path.join(directory, name))
        except FileNotFoundError:
            return None
        except OSError as err:
            error = translate_os_error(err, os.path.join(directory, name))
            if isinstance(error, AccessDenied):
                return None
            raise error from err

    stat = parse_flat(text("memory.stat") or "")
    if mount.version == 1:
        oom = parse_flat(text("memory.oom_control") or "")
        usage = text("memory.usage_in_bytes")
        return MemcgControls(None if usage is None else int(usage), None, None, None,
                             None if "under_oom" not in oom else bool(oom["under_oom"]),
                             stat.get("total_inactive_file"))
    high = text("memory.high")
    group = text("memory.oom.group")
    events = parse_flat(text("memory.events") or "")
    usage = text("memory.current")
    return MemcgControls(
        usage_bytes=None if usage is None else int(usage),
        high_bytes=None if high is None or high.strip() == "max" else int(high),
        high_events=events.get("high"),
        oom_group=None if group is None else group.strip() == "1",
        under_oom=None,
        inactive_file_bytes=stat.get("inactive_file"),
    )
