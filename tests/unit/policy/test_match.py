"""policy/match.py: matchers over plain process values: AND across matchers, OR
within one, None fields never match, and hostile comm strings stay one token."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from oomlens.errors import UsageError
from oomlens.policy.match import (
    Matchers,
    Need,
    Subject,
    cgroup_matches,
    cgroup_problem,
    comm_problem,
    compile_cmdline,
    exe_problem,
    quote_value,
    unit_name,
    unit_problem,
)

SSHD = Subject(
    pid=812, comm="sshd", uid=0, user="root",
    cmdline="sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
    exe="/usr/sbin/sshd", cgroups=("/system.slice/ssh.service",), unit="ssh.service",
)
POSTGRES = Subject(
    pid=1200, comm="postgres", uid=114, user="postgres",
    cmdline="postgres: 15/main: checkpointer", exe="/usr/lib/postgresql/15/bin/postgres",
    cgroups=("/system.slice/system-postgresql.slice/postgresql@15-main.service",),
    unit="postgresql@15-main.service",
)
UNREAD = Subject(pid=4242, comm="worker", uid=1000, user="alice")


def subject(**changes: object) -> Subject:
    fields: dict[str, object] = {
        "pid": 4242, "comm": "worker", "uid": 1000, "user": "alice",
        "cmdline": "/opt/app/worker --queue jobs", "exe": "/opt/app/worker",
        "cgroups": ("/user.slice/user-1000.slice/session-3.scope",), "unit": "session-3.scope",
    }
    fields.update(changes)
    return Subject(**fields)  # type: ignore[arg-type]


class TestEachMatcher:
    def test_comm(self) -> None:
        assert Matchers(names=("sshd",)).matches(SSHD)
        assert not Matchers(names=("sshd",)).matches(POSTGRES)

    def test_comm_is_exact(self) -> None:
        assert not Matchers(names=("ssh",)).matches(SSHD)
        assert not Matchers(names=("SSHD",)).matches(SSHD)

    def test_cmdline_is_searched_anywhere(self) -> None:
        assert Matchers(cmdline=re.compile("checkpointer")).matches(POSTGRES)
        assert Matchers(cmdline=re.compile(r"^postgres: \d+/main")).matches(POSTGRES)
        assert not Matchers(cmdline=re.compile("^checkpointer")).matches(POSTGRES)

    def test_exe(self) -> None:
        assert Matchers(exes=("/usr/sbin/sshd",)).matches(SSHD)
        assert not Matchers(exes=("/usr/sbin/ssh",)).matches(SSHD)
        assert not Matchers(exes=("sshd",)).matches(SSHD)

    def test_exe_of_an_upgraded_binary_still_matches(self) -> None:
        upgraded = subject(exe="/opt/app/worker (deleted)")
        assert Matchers(exes=("/opt/app/worker",)).matches(upgraded)

    def test_exe_named_with_the_deleted_suffix_matches_too(self) -> None:
        assert Matchers(exes=("/opt/app/worker (deleted)",)).matches(
            subject(exe="/opt/app/worker (deleted)")
        )
        assert not Matchers(exes=("/opt/app/worker (deleted)",)).matches(subject())

    def test_deleted_suffix_only_counts_at_the_end(self) -> None:
        odd = subject(exe="/opt/app/worker (deleted)/x")
        assert not Matchers(exes=("/opt/app/worker",)).matches(odd)

    def test_user_by_name(self) -> None:
        assert Matchers(users=("postgres",)).matches(POSTGRES)
        assert not Matchers(users=("postgres",)).matches(SSHD)

    def test_user_by_uid(self) -> None:
        assert Matchers(users=("114",)).matches(POSTGRES)
        assert Matchers(users=("0",)).matches(SSHD)
        assert not Matchers(users=("1000",)).matches(SSHD)

    def test_user_without_a_name(self) -> None:
        nameless = subject(uid=70000, user="70000")
        assert Matchers(users=("70000",)).matches(nameless)
        assert not Matchers(users=("alice",)).matches(nameless)

    def test_cgroup_path(self) -> None:
        assert Matchers(cgroups=("/system.slice",)).matches(SSHD)
        assert Matchers(cgroups=("/system.slice/ssh.service",)).matches(SSHD)
        assert not Matchers(cgroups=("/user.slice",)).matches(SSHD)

    def test_cgroup_glob(self) -> None:
        assert Matchers(cgroups=("*/postgresql@*.service",)).matches(POSTGRES)
        assert not Matchers(cgroups=("*/postgresql@*.service",)).matches(SSHD)

    def test_unit(self) -> None:
        assert Matchers(units=("ssh.service",)).matches(SSHD)
        assert not Matchers(units=("ssh.service",)).matches(POSTGRES)

    def test_unit_without_suffix_means_service(self) -> None:
        assert Matchers(units=("ssh",)).matches(SSHD)
        assert Matchers(units=("postgresql@15-main",)).matches(POSTGRES)
        assert not Matchers(units=("session-3",)).matches(subject())
        assert Matchers(units=("session-3.scope",)).matches(subject())


class TestCombination:
    def test_every_matcher_set_must_match(self) -> None:
        both = Matchers(names=("postgres",), users=("postgres",))
        assert both.matches(POSTGRES)
        assert not both.matches(subject(comm="postgres", user="alice"))
        assert not both.matches(subject(comm="psql", user="postgres"))

    def test_all_six_together(self) -> None:
        matchers = Matchers(
            names=("sshd",), cmdline=re.compile("listener"), exes=("/usr/sbin/sshd",),
            users=("root",), cgroups=("/system.slice",), units=("ssh",),
        )
        assert matchers.matches(SSHD)
        for change in ({"comm": "sshd2"}, {"cmdline": "sshd -D"}, {"exe": "/usr/bin/sshd"},
                       {"user": "nobody", "uid": 65534}, {"cgroups": ("/init.scope",)},
                       {"unit": "sshd.service"}):
            assert not matchers.matches(replace(SSHD, **change)), change

    def test_any_value_of_one_matcher_is_enough(self) -> None:
        names = Matchers(names=("dropbear", "sshd"))
        assert names.matches(SSHD)
        assert not names.matches(POSTGRES)
        assert Matchers(users=("nobody", "114")).matches(POSTGRES)
        assert Matchers(cgroups=("/user.slice", "/system.slice")).matches(SSHD)

    def test_any_cgroup_path_of_the_subject_is_enough(self) -> None:
        v1 = subject(cgroups=("/", "/system.slice/docker-abc.scope", "/user.slice"))
        assert Matchers(cgroups=("/system.slice",)).matches(v1)
        assert not Matchers(cgroups=("/init.scope",)).matches(v1)

    def test_no_matcher_matches_everything(self) -> None:
        assert Matchers().is_empty()
        assert Matchers().matches(UNREAD)


class TestUnreadFields:
    """A field the shell did not (or could not) read never matches, and never raises."""

    @pytest.mark.parametrize(
        "matchers",
        [
            Matchers(cmdline=re.compile("")),
            Matchers(exes=("/opt/app/worker",)),
            Matchers(cgroups=("/",)),
            Matchers(cgroups=("*",)),
            Matchers(units=("session-3.scope",)),
        ],
        ids=["cmdline", "exe", "cgroup-path", "cgroup-glob", "unit"],
    )
    def test_none_does_not_match(self, matchers: Matchers) -> None:
        assert not matchers.matches(UNREAD)

    def test_matchers_that_need_no_extra_read_still_match(self) -> None:
        assert Matchers(names=("worker",), users=("alice",)).matches(UNREAD)

    def test_empty_cgroup_list_matches_no_cgroup(self) -> None:
        assert not Matchers(cgroups=("/",)).matches(subject(cgroups=()))


class TestCgroupSemantics:
    @pytest.mark.parametrize(
        ("pattern", "path", "expected"),
        [
            ("/a", "/a", True),
            ("/a", "/a/b", True),
            ("/a", "/a/b/c", True),
            ("/a", "/ab", False),
            ("/a", "/", False),
            ("/a/", "/a/b", True),
            ("/a/", "/ab", False),
            ("/", "/", True),
            ("/", "/anything/below", True),
            ("/a/b", "/a", False),
            ("/a*", "/ab", True),
            ("/a*", "/a/b", True),
            ("/a/*", "/a", False),
            ("/a/*", "/a/b", True),
            ("/a/?", "/a/bc", False),
            ("/a/[bc]", "/a/c", True),
            ("/A*", "/a", False),
            ("*.scope", "/user.slice/session-3.scope", True),
        ],
    )
    def test_prefix_and_glob(self, pattern: str, path: str, expected: bool) -> None:
        assert cgroup_matches(pattern, path) is expected
        assert Matchers(cgroups=(pattern,)).matches(subject(cgroups=(path,))) is expected


class TestNeeds:
    def test_comm_and_user_need_nothing_extra(self) -> None:
        assert Matchers(names=("a",), users=("b",)).needs() == Need.NONE
        assert Matchers().needs() == Need.NONE

    @pytest.mark.parametrize(
        ("matchers", "need"),
        [
            (Matchers(cmdline=re.compile("x")), Need.CMDLINE),
            (Matchers(exes=("/x",)), Need.EXE),
            (Matchers(cgroups=("/x",)), Need.CGROUP),
            (Matchers(units=("x",)), Need.CGROUP),
        ],
    )
    def test_single(self, matchers: Matchers, need: Need) -> None:
        assert matchers.needs() == need

    def test_union(self) -> None:
        matchers = Matchers(cmdline=re.compile("x"), exes=("/x",), units=("x",), names=("x",))
        assert matchers.needs() == Need.CMDLINE | Need.EXE | Need.CGROUP


class TestHostileComm:
    """Any process chooses its comm (prctl PR_SET_NAME): it is data, never syntax."""

    @pytest.mark.parametrize(
        "comm",
        ["a b", "(sd-pam)", "x) R 1 2", "evil\nuser=root", "tab\there", "", "'\"", "sshd "],
    )
    def test_exact_match_only(self, comm: str) -> None:
        assert Matchers(names=(comm,)).matches(subject(comm=comm))
        assert not Matchers(names=("sshd",)).matches(subject(comm=comm))

    def test_describe_keeps_one_line_and_one_token(self) -> None:
        text = Matchers(names=("evil\nuser=root", "a b")).describe()
        assert "\n" not in text
        assert text == r'comm="evil\nuser=root","a b"'

    def test_quote_value(self) -> None:
        assert quote_value("sshd") == "sshd"
        assert quote_value("(sd-pam)") == '"(sd-pam)"'
        assert quote_value("a,b") == '"a,b"'
        assert quote_value('say "hi"') == r'"say \"hi\""'
        assert quote_value("") == '""'
        assert quote_value("naïve") == "naïve"
        assert quote_value("bell\x07") == r'"bell\u0007"'
        assert quote_value("zero\u200bwidth") == r'"zero\u200bwidth"'


class TestDescribe:
    def test_spec_example(self) -> None:
        matchers = Matchers(names=("sshd",), cmdline=re.compile("x"), users=("postgres",))
        assert matchers.describe() == "comm=sshd cmdline~/x/ user=postgres"

    def test_all_matchers_in_order(self) -> None:
        matchers = Matchers(
            names=("sshd", "dropbear"), cmdline=re.compile(r"-D\b"), exes=("/usr/sbin/sshd",),
            users=("root", "0"), cgroups=("/system.slice", "*/ssh*"), units=("ssh", "x.socket"),
        )
        assert matchers.describe() == (
            r"comm=sshd,dropbear cmdline~/-D\b/ exe=/usr/sbin/sshd user=root,0 "
            "cgroup=/system.slice,*/ssh* unit=ssh.service,x.socket"
        )

    def test_cmdline_with_spaces_is_quoted(self) -> None:
        assert Matchers(cmdline=re.compile("java .*kafka")).describe() == 'cmdline~"java .*kafka"'

    def test_empty(self) -> None:
        assert Matchers().describe() == "any process"


class TestHelpers:
    @pytest.mark.parametrize(
        ("name", "unit"),
        [
            ("sshd", "sshd.service"),
            ("sshd.service", "sshd.service"),
            ("getty@tty1", "getty@tty1.service"),
            ("session-3.scope", "session-3.scope"),
            ("user.slice", "user.slice"),
            ("docker.socket", "docker.socket"),
            ("org.gnome.Shell@x11", "org.gnome.Shell@x11.service"),
        ],
    )
    def test_unit_name(self, name: str, unit: str) -> None:
        assert unit_name(name) == unit

    def test_compile_cmdline(self) -> None:
        assert compile_cmdline(r"java .*-jar\s+kafka").search("/usr/bin/java -Xmx1g -jar  kafka")

    @pytest.mark.parametrize(
        ("pattern", "message"),
        [
            ("a(", "invalid cmdline regular expression 'a(': missing ), unterminated subpattern "
                   "at position 1"),
            ("*x", "invalid cmdline regular expression '*x': nothing to repeat at position 0"),
            ("[z-a]", "invalid cmdline regular expression '[z-a]': bad character range z-a "
                      "at position 1"),
        ],
    )
    def test_compile_cmdline_error(self, pattern: str, message: str) -> None:
        with pytest.raises(UsageError) as caught:
            compile_cmdline(pattern)
        assert str(caught.value) == message
        assert "\n" not in str(caught.value)


class TestValuesThatNeverMatch:
    """Checks shared by policy keys and CLI selectors: a value no process can have is a
    mistake to report, not a selector that silently matches nothing."""

    @pytest.mark.parametrize("comm", ["sshd", "systemd-journal", "ü" * 7, "a b(c)"])
    def test_comm_that_fits(self, comm: str) -> None:
        assert comm_problem(comm) is None

    def test_comm_longer_than_the_kernel_keeps(self) -> None:
        assert comm_problem("systemd-journald") == (
            "comm 'systemd-journald' is 16 bytes, but the kernel keeps only the first 15 "
            '(TASK_COMM_LEN), so it never matches: use "systemd-journal", or match the '
            "command line"
        )

    def test_comm_cut_inside_a_multibyte_character(self) -> None:
        problem = comm_problem("ü" * 8)
        assert problem is not None
        assert problem.startswith("comm 'üüüüüüüü' is 16 bytes")
        assert 'use "üüüüüüü",' in problem

    def test_exe(self) -> None:
        assert exe_problem("/usr/sbin/sshd") is None
        assert exe_problem("sshd") is not None

    @pytest.mark.parametrize(
        ("cgroup", "ok"),
        [("/", True), ("/system.slice", True), ("*docker*", True), ("system.slice", False)],
    )
    def test_cgroup(self, cgroup: str, ok: bool) -> None:
        assert (cgroup_problem(cgroup) is None) is ok

    def test_unit(self) -> None:
        assert unit_problem("sshd") is None
        assert unit_problem("getty@tty1.service") is None
        assert unit_problem("/system.slice/ssh.service") is not None
