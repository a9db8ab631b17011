"""system/oomconfig.py on a temporary file-system root: OOMScoreAdjust= drop-ins (each
unit directory once, a /lib that links to /usr/lib), lines naming oom_adj (and not the
words that contain it), and installed OOM daemons."""

from __future__ import annotations

import os
from pathlib import Path

from oomlens.system.oomconfig import (
    OomAdjMention,
    ScoreAdjustSetting,
    find_oom_adj_mentions,
    find_score_adjust_dropins,
    installed_oom_daemons,
    unit_dirs,
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_dropins_each_directory_once(tmp_path: Path) -> None:
    a = write(tmp_path / "usr/lib/systemd/system/ssh.service.d/oom.conf",
              "[Service]\nOOMScoreAdjust=-900\n")
    write(tmp_path / "usr/lib/systemd/system/ssh.service",  # a unit, not a drop-in
          "[Service]\nOOMScoreAdjust=-1000\n")
    os.symlink("usr/lib", tmp_path / "lib")
    b = write(tmp_path / "custom/db.service.d/10-x.conf",
              "[Unit]\nDescription=OOMScoreAdjust=1\n[Service]\n OOMScoreAdjust = -500 \n")
    dirs = unit_dirs(str(tmp_path), systemd_dir=str(tmp_path / "custom"))
    assert dirs[0] == str(tmp_path / "custom")
    assert find_score_adjust_dropins(dirs) == (
        ScoreAdjustSetting(str(b), 4, "db.service", "-500"),
        ScoreAdjustSetting(str(a), 2, "ssh.service", "-900"))


def test_oom_adj_mentions(tmp_path: Path) -> None:
    rc = write(tmp_path / "etc/rc.local", "#!/bin/sh\n\n  echo -17 > /proc/$PID/oom_adj  \n")
    write(tmp_path / "etc/cron.d/fine", "* * * * * root echo 0 > /proc/1/oom_score_adj\n"
          "# oom_adjust OOMScoreAdjust=-1\n")
    deep = write(tmp_path / "etc/systemd/system/db.service.d/x.conf",
                 "[Service]\nExecStartPost=/bin/sh -c 'echo -16 > /proc/$MAINPID/oom_adj'\n")
    write(tmp_path / "etc/init.d/binary", b"\0\x01oom_adj")
    write(tmp_path / "etc/default/huge", "oom_adj\n" * 40000)
    assert find_oom_adj_mentions(str(tmp_path)) == (
        OomAdjMention(str(rc), 3, "echo -17 > /proc/$PID/oom_adj"),
        OomAdjMention(str(deep), 2,
                      "ExecStartPost=/bin/sh -c 'echo -16 > /proc/$MAINPID/oom_adj'"))


def test_installed_daemons(tmp_path: Path) -> None:
    write(tmp_path / "usr/bin/earlyoom", "#!/bin/sh\n")
    write(tmp_path / "lib/systemd/systemd-oomd", "#!/bin/sh\n")
    (tmp_path / "usr/sbin/nohang").mkdir(parents=True)  # a directory is not a program
    assert installed_oom_daemons(str(tmp_path)) == {
        "earlyoom": (f"{tmp_path}/usr/bin/earlyoom",),
        "systemd-oomd": (f"{tmp_path}/lib/systemd/systemd-oomd",)}
