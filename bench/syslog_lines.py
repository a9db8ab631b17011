"""The ordinary lines of the synthetic syslog (bench/synthlog.py): one web server's
sshd, CRON, systemd, kernel (audit, EXT4-fs, usb, UFW), nginx and postfix messages,
60-200 bytes with their syslog prefix, none with a word that could start or end an
OOM report."""

from __future__ import annotations

import random
from collections.abc import Callable

HOST = "web01"
EPOCH_START = 1736121600  # 2025-01-06 00:00:00 UTC, the log's first day
SPAN_S = 90 * 86400
POOL_SIZE = 1 << 16  # distinct ordinary messages; lines pick from them at random
# No ordinary line may hold one of these (in any case): the kills in the file are
# the reports'.
OOM_WORDS = ("oom", "ill process", "illed process", "of memory", "deadlocked", "panic")

_USERS = ("deploy", "alice", "bob", "backup", "git", "ubuntu", "jenkins")
_BAD_USERS = ("admin", "test", "oracle", "postgres", "user", "guest", "ftpuser", "pi",
              "support", "ubnt", "hadoop", "es")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_HEX = "0123456789abcdef"
_UNITS = (
    ("apt-daily.service", "Daily apt download activities"),
    ("apt-daily-upgrade.service", "Daily apt upgrade and clean activities"),
    ("logrotate.service", "Rotate log files"),
    ("man-db.service", "Daily man-db regeneration"),
    ("systemd-tmpfiles-clean.service", "Cleanup of Temporary Directories"),
    ("phpsessionclean.service", "Clean php session files"),
    ("certbot.service", "Certbot"),
    ("fstrim.service", "Discard unused blocks on filesystems from /etc/fstab"),
    ("sysstat-collect.service", "system activity accounting tool"),
    ("e2scrub_all.service", "Online ext4 Metadata Check for All Filesystems"),
)
_PATHS = ("/", "/api/v1/items", "/api/v1/items/{n}", "/login", "/static/css/app.{h}.css",
          "/static/js/app.{h}.js", "/favicon.ico", "/robots.txt", "/wp-login.php", "/health",
          "/api/v1/search?q=lamp&page={n}", "/account/settings", "/feed.xml")
_STATUS = (200,) * 40 + (304,) * 6 + (301, 302, 404, 404, 404, 499, 500, 502)
_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    "curl/7.88.1", "Prometheus/2.45.0", "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "python-requests/2.31.0", "Go-http-client/1.1",
)
_CRON = (
    "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "(root) CMD (   cd / && run-parts --report /etc/cron.hourly)",
    "(www-data) CMD (php /var/www/app/artisan schedule:run >> /dev/null 2>&1)",
    "(backup) CMD (/usr/local/bin/backup-db --quiet)",
)


def _ip(rng: random.Random) -> str:
    return (f"{rng.choice((5, 31, 45, 62, 77, 85, 91, 103, 141, 185, 193, 212))}."
            f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")


def _word(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _sshd(rng: random.Random) -> str:
    pid, ip, port = rng.randrange(1000, 99999), _ip(rng), rng.randrange(1024, 65535)
    user, bad = rng.choice(_USERS), rng.choice(_BAD_USERS)
    msg = rng.choice((
        f"Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 "
        f"SHA256:{_word(rng, _B64, 43)}",
        f"pam_unix(sshd:session): session opened for user {user}(uid={rng.randrange(1000, 1010)}"
        ") by (uid=0)",
        f"pam_unix(sshd:session): session closed for user {user}",
        f"Received disconnect from {ip} port {port}:11: disconnected by user",
        f"Disconnected from user {user} {ip} port {port}",
        f"Invalid user {bad} from {ip} port {port}",
        f"Connection closed by invalid user {bad} {ip} port {port} [preauth]",
        f"Received disconnect from {ip} port {port}:11: Bye Bye [preauth]",
        "error: kex_exchange_identification: Connection closed by remote host",
    ))
    return f"sshd[{pid}]: {msg}"


def _cron(rng: random.Random) -> str:
    pid = rng.randrange(1000, 99999)
    msg = rng.choice((
        *_CRON,
        "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
        "pam_unix(cron:session): session closed for user root",
    ))
    return f"CRON[{pid}]: {msg}"


def _systemd(rng: random.Random) -> str:
    unit, desc = rng.choice(_UNITS)
    n, user = rng.randrange(1, 9000), rng.choice(_USERS)
    return rng.choice((
        f"systemd[1]: Starting {unit} - {desc}...",
        f"systemd[1]: Finished {unit} - {desc}.",
        f"systemd[1]: {unit}: Deactivated successfully.",
        f"systemd[1]: {unit}: Consumed {rng.randrange(0, 40)}.{rng.randrange(1000):03d}s CPU "
        "time.",
        f"systemd[1]: Started session-{n}.scope - Session {n} of User {user}.",
        f"systemd-logind[{rng.randrange(300, 900)}]: New session {n} of user {user}.",
        f"systemd-logind[{rng.randrange(300, 900)}]: Session {n} logged out. Waiting for "
        "processes to exit.",
        f"systemd-logind[{rng.randrange(300, 900)}]: Removed session {n}.",
    ))


def _kernel(rng: random.Random) -> str:
    """Kernel messages (without the `kernel: [stamp] ` the writer puts in front)."""
    pid, n, port = rng.randrange(1000, 99999), rng.randrange(1, 128), rng.randrange(1024, 65535)
    epoch = EPOCH_START + rng.randrange(SPAN_S)
    mac = ":".join(_word(rng, _HEX, 2) for _ in range(6))
    return rng.choice((
        f'audit: type=1400 audit({epoch}.{rng.randrange(1000):03d}:{rng.randrange(10**5)}): '
        f'apparmor="DENIED" operation="open" profile="/usr/sbin/nginx" '
        f'name="/proc/{pid}/status" pid={pid} comm="nginx"',
        f'audit: type=1400 audit({epoch}.{rng.randrange(1000):03d}:{rng.randrange(10**5)}): '
        f'apparmor="STATUS" operation="profile_replace" profile="unconfined" '
        f'name="/usr/bin/man" pid={pid} comm="apparmor_parser"',
        f"EXT4-fs (sda1): mounted filesystem {_word(rng, _HEX, 8)}-{_word(rng, _HEX, 4)} r/w "
        "with ordered data mode. Quota mode: none.",
        f"EXT4-fs (sdb1): error count since last fsck: {n}",
        f"usb 1-{n % 4 + 1}: new high-speed USB device number {n} using xhci_hcd",
        f"usb 1-{n % 4 + 1}: New USB device found, idVendor=0781, idProduct=5583, "
        "bcdDevice= 1.00",
        f"usb 1-{n % 4 + 1}: USB disconnect, device number {n}",
        f"[UFW BLOCK] IN=eth0 OUT= MAC={mac}:52:54:00:12:34:56:08:00 SRC={_ip(rng)} "
        f"DST=203.0.113.10 LEN=44 TOS=0x00 PREC=0x00 TTL={rng.randrange(230, 250)} "
        f"ID={rng.randrange(65536)} PROTO=TCP SPT={port} DPT={rng.choice((22, 23, 3389, 8080))} "
        "WINDOW=1024 RES=0x00 SYN URGP=0",
    ))


def _nginx(rng: random.Random) -> str:
    path = rng.choice(_PATHS).format(n=rng.randrange(1, 5000), h=_word(rng, _HEX, 8))
    method = "POST" if path == "/login" and rng.random() < 0.5 else "GET"
    return (f'nginx: {_ip(rng)} - - "{method} {path} HTTP/1.1" {rng.choice(_STATUS)} '
            f'{rng.randrange(0, 60000)} "-" "{rng.choice(_AGENTS)}" '
            f"rt={rng.randrange(0, 900) / 1000:.3f}")


def _postfix(rng: random.Random) -> str:
    pid, ip, qid = rng.randrange(1000, 99999), _ip(rng), _word(rng, "0123456789ABCDEF", 10)
    user = rng.choice(_USERS)
    return rng.choice((
        f"postfix/smtpd[{pid}]: connect from unknown[{ip}]",
        f"postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 auth=0/1 quit=1 "
        "commands=2/3",
        f"postfix/pickup[{pid}]: {qid}: uid=33 from=<www-data>",
        f"postfix/cleanup[{pid}]: {qid}: message-id=<{_word(rng, _HEX, 16)}@{HOST}.example.org>",
        f"postfix/qmgr[{pid}]: {qid}: from=<{user}@example.org>, size={rng.randrange(600, 90000)}"
        ", nrcpt=1 (queue active)",
        f"postfix/smtp[{pid}]: {qid}: to=<{user}@example.net>, relay=mx.example.net[{ip}]:25, "
        f"delay={rng.randrange(1, 30) / 10}, delays=0.01/0/0.2/0.3, dsn=2.0.0, status=sent "
        f"(250 2.0.0 OK {rng.randrange(10**9)})",
        f"postfix/qmgr[{pid}]: {qid}: removed",
    ))


# (weight, maker, is a kernel line)
_MAKERS: tuple[tuple[int, Callable[[random.Random], str], bool], ...] = (
    (20, _sshd, False), (10, _cron, False), (15, _systemd, False), (15, _kernel, True),
    (30, _nginx, False), (10, _postfix, False),
)  # fmt: skip


def message_pool(rng: random.Random) -> list[tuple[bool, str]]:
    """POOL_SIZE ordinary messages, (kernel line, text), none with an OOM word in any
    case."""
    weights = [w for w, _, _ in _MAKERS]
    pool = []
    for _, make, kernel in rng.choices(_MAKERS, weights=weights, k=POOL_SIZE):
        text = make(rng)
        while any(word in text.lower() for word in OOM_WORDS):  # a random "SHA256:..OoM.."
            text = make(rng)
        pool.append((kernel, text))
    return pool
