"""What the kernel lab needs on the host, and `make lab-deps` to get it.

Needs: `qemu-system-x86_64` (Debian package qemu-system-x86), a *static* busybox
(busybox-static: it runs in the initramfs, where there is no libc), `cpio` (packs the
initramfs) and Debian's kernel package (`linux-image-amd64` depends on the real one,
e.g. linux-image-6.1.0-56-amd64), fetched with `apt-get download` into the cache and
unpacked there, never installed.

`make lab-deps` runs this file: as root on Debian it installs what is missing
(`apt-get update -qq` first, only if something is missing) and downloads the kernel
.deb if the cache has none. Elsewhere it says why it cannot and exits 0: the lab tests
then skip with the same reason (or fail, with OOMLENS_REQUIRE_KERNEL_TESTS=1).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "lab"
DEB_DIR = CACHE / "debs"
KERNEL_META_PACKAGE = "linux-image-amd64"
QEMU = "qemu-system-x86_64"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
APT_TIMEOUT_S = 900

# command -> the Debian package that provides it
PACKAGES = {QEMU: "qemu-system-x86", "busybox (static)": "busybox-static", "cpio": "cpio"}


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP), i.e.
    one that runs without a dynamic loader."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # ELFCLASS64
                return False
            order = "<" if head[5] == 1 else ">"
            (phoff,) = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(
        struct.unpack_from(order + "I", table, i * phentsize)[0] != pt_interp
        for i in range(phnum)
    )


def static_busybox() -> str | None:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and is_static_elf(path):
            return path
    return None


def missing_tools() -> list[str]:
    """The tools (keys of PACKAGES) that are not here."""
    missing = []
    if shutil.which(QEMU) is None:
        missing.append(QEMU)
    if static_busybox() is None:
        missing.append("busybox (static)")
    if shutil.which("cpio") is None:
        missing.append("cpio")
    return missing


def cached_kernel_deb() -> Path | None:
    """The newest kernel .deb in the cache (any version: the cache is never refreshed
    behind the tests' back; delete .cache/lab to move to a newer kernel)."""
    if not DEB_DIR.is_dir():
        return None
    debs = sorted(DEB_DIR.glob("linux-image-*.deb"))
    return debs[-1] if debs else None


def kernel_package_name() -> str:
    """The real package behind linux-image-amd64 (`apt-cache depends`). Raises
    RuntimeError with the reason when apt cannot say."""
    if shutil.which("apt-cache") is None:
        raise RuntimeError("apt-cache is not available (not Debian?)")
    proc = subprocess.run(
        ["apt-cache", "depends", KERNEL_META_PACKAGE], capture_output=True, text=True,
        timeout=120, check=False,
    )
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        name = value.strip()
        if key == "Depends" and name.startswith("linux-image-") and name[12:13].isdigit():
            return name
    raise RuntimeError(
        f"apt-cache depends {KERNEL_META_PACKAGE} names no kernel package "
        f"(exit {proc.returncode}: {proc.stderr.strip() or 'no package lists?'})"
    )


def download_kernel_deb() -> Path:
    """`apt-get download` the kernel package into the cache (no root needed). Raises
    RuntimeError with the reason on failure."""
    package = kernel_package_name()
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get is not available")
    DEB_DIR.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["apt-get", "download", "-q", package], cwd=DEB_DIR, capture_output=True, text=True,
        timeout=APT_TIMEOUT_S, check=False,
    )
    deb = cached_kernel_deb()
    if proc.returncode != 0 or deb is None:
        raise RuntimeError(f"apt-get download {package} failed: {proc.stderr.strip()}")
    return deb


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("lab-deps: apt-get", *args, flush=True)
    subprocess.run(["apt-get", *args], check=True, env=env, timeout=APT_TIMEOUT_S)


def main() -> int:
    missing = missing_tools()
    need_deb = cached_kernel_deb() is None
    if not missing and not need_deb:
        print(f"lab-deps: all present (kernel package {cached_kernel_deb()})")
        return 0
    apt = shutil.which("apt-get") is not None
    if missing:
        packages = sorted({PACKAGES[tool] for tool in missing})
        if os.geteuid() != 0 or not apt:
            why = "not root" if os.geteuid() != 0 else "apt-get is not available"
            print(f"lab-deps: missing {', '.join(missing)} ({why}: cannot install "
                  f"{' '.join(packages)}); the kernel lab tests will skip", flush=True)
        else:
            try:
                _apt("update", "-qq")
                _apt("install", "-y", "-qq", "--no-install-recommends", *packages)
            except (subprocess.SubprocessError, OSError) as err:
                print(f"lab-deps: installing {' '.join(packages)} failed: {err}; "
                      "the kernel lab tests will skip", flush=True)
        need_update = False
    else:
        need_update = True
    if need_deb:
        try:
            deb = download_kernel_deb()
        except (RuntimeError, subprocess.SubprocessError, OSError) as first:
            deb = None
            if need_update and apt and os.geteuid() == 0:
                try:  # stale or empty package lists: refresh once and retry
                    _apt("update", "-qq")
                    deb = download_kernel_deb()
                except (RuntimeError, subprocess.SubprocessError, OSError) as err:
                    print(f"lab-deps: cannot download the kernel package: {err}", flush=True)
            else:
                print(f"lab-deps: cannot download the kernel package: {first}", flush=True)
        if deb is not None:
            print(f"lab-deps: downloaded {deb}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
