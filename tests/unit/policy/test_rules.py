"""policy/rules.py: the TOML policy file. A valid file parses to ordered rules; every
invalid one is refused whole, with a message naming the file, the exact line and the
rule."""

from __future__ import annotations

import math
import re
from textwrap import dedent

import pytest

from oomlens.errors import UsageError
from oomlens.policy.match import Need, Subject
from oomlens.policy.rules import (
    DEFAULT_POLICY_PATH,
    PREFER_DEFAULT,
    PROTECT_SCORE,
    Action,
    Limits,
    Policy,
    PolicyError,
    check_share_bounds,
    parse_policy,
    parse_share,
)

PATH = "/etc/oomlens/policy.toml"

FULL = dedent('''\
    # oomlens policy for db01
    [limits]
    max_protected_share = "40%"
    min_killable_share = 0.25

    [[rule]]
    name = "ssh"
    comm = ["sshd", "dropbear"]
    protect = true

    [[ rule ]]   # the database
    name = "postgres"
    user = ["postgres", 114]
    cmdline = 'postgres: \\d+/main'
    exe = "/usr/lib/postgresql/15/bin/postgres"
    cgroup = "/system.slice/system-postgresql.slice"
    score = -900
    force = true

    [[rule]]
    unit = "chromium"
    prefer = true

    [[rule]]
    cgroup = ["/user.slice/*/app-*.scope"]
    prefer = 200
    ''')


def subject(**changes: object) -> Subject:
    fields: dict[str, object] = {
        "pid": 4242, "comm": "worker", "uid": 1000, "user": "alice", "cmdline": "worker",
        "exe": "/opt/worker", "cgroups": ("/user.slice",), "unit": None,
    }
    fields.update(changes)
    return Subject(**fields)  # type: ignore[arg-type]


def error_of(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(dedent(text), PATH)
    return caught.value


class TestValidFile:
    def test_rules_in_file_order(self) -> None:
        policy = parse_policy(FULL, PATH)
        assert policy.path == PATH
        assert [rule.name for rule in policy.rules] == ["ssh", "postgres", "rule 3", "rule 4"]
        assert [rule.line for rule in policy.rules] == [6, 11, 20, 24]

    def test_actions(self) -> None:
        rules = parse_policy(FULL, PATH).rules
        assert [(rule.action, rule.oom_score_adj, rule.force) for rule in rules] == [
            (Action.PROTECT, -1000, False),
            (Action.SCORE, -900, True),
            (Action.PREFER, 500, False),
            (Action.PREFER, 200, False),
        ]
        assert rules[0].action == "protect"

    def test_matchers(self) -> None:
        ssh, postgres, chromium, apps = (rule.matchers for rule in parse_policy(FULL, PATH).rules)
        assert ssh.names == ("sshd", "dropbear")
        assert postgres.users == ("postgres", "114")
        assert postgres.cmdline == re.compile(r"postgres: \d+/main")
        assert postgres.exes == ("/usr/lib/postgresql/15/bin/postgres",)
        assert postgres.cgroups == ("/system.slice/system-postgresql.slice",)
        assert chromium.units == ("chromium",)
        assert apps.cgroups == ("/user.slice/*/app-*.scope",)

    def test_limits(self) -> None:
        assert parse_policy(FULL, PATH).limits == Limits(0.40, 0.25)

    def test_describe(self) -> None:
        policy = parse_policy(FULL, PATH)
        assert policy.rules[0].describe(PATH) == 'rule "ssh" (/etc/oomlens/policy.toml:6)'
        assert policy.rules[2].describe("p.toml") == 'rule "rule 3" (p.toml:20)'

    def test_needs_is_the_union(self) -> None:
        assert parse_policy(FULL, PATH).needs() == Need.CMDLINE | Need.EXE | Need.CGROUP
        only_comm = parse_policy('[[rule]]\ncomm = "sshd"\nprotect = true\n', PATH)
        assert only_comm.needs() == Need.NONE

    def test_constants(self) -> None:
        assert (DEFAULT_POLICY_PATH, PROTECT_SCORE, PREFER_DEFAULT) == (
            "/etc/oomlens/policy.toml", -1000, 500,
        )

    @pytest.mark.parametrize("text", ["", "\n\n", "# nothing yet\n", "[limits]\n"])
    def test_empty_policy_has_no_rules(self, text: str) -> None:
        assert parse_policy(text, PATH) == Policy(PATH, (), Limits())

    def test_default_limits(self) -> None:
        assert Limits() == Limits(max_protected_share=0.30, min_killable_share=0.50)

    @pytest.mark.parametrize(
        ("action", "score"),
        [("protect = true", -1000), ("prefer = true", 500), ("prefer = 1", 1),
         ("prefer = 1000", 1000), ("score = -1000", -1000), ("score = 1000", 1000),
         ("score = 0", 0)],
    )
    def test_action_values(self, action: str, score: int) -> None:
        policy = parse_policy(f'[[rule]]\ncomm = "x"\n{action}\n', PATH)
        assert policy.rules[0].oom_score_adj == score

    def test_integer_uid_and_inline_forms(self) -> None:
        policy = parse_policy('rule = [{user = 0, score = -100}, {user = ["a", 7], prefer = 3}]\n',
                              PATH)
        assert [rule.matchers.users for rule in policy.rules] == [("0",), ("a", "7")]
        assert [rule.line for rule in policy.rules] == [1, 1]

    def test_crlf_line_endings(self) -> None:
        policy = parse_policy('[[rule]]\r\ncomm = "a"\r\nprotect = true\r\n', PATH)
        assert policy.rules[0].line == 1


class TestFirstMatch:
    def test_first_match_wins(self) -> None:
        policy = parse_policy(dedent('''\
            [[rule]]
            name = "narrow"
            comm = "postgres"
            user = "postgres"
            score = -900

            [[rule]]
            name = "broad"
            user = "postgres"
            prefer = true
            '''), PATH)
        server = subject(comm="postgres", user="postgres", uid=114)
        psql = subject(comm="psql", user="postgres", uid=114)
        match_server, match_psql = policy.first_match(server), policy.first_match(psql)
        assert match_server is not None and match_server.name == "narrow"
        assert match_psql is not None and match_psql.name == "broad"
        assert policy.first_match(subject()) is None

    def test_order_decides_not_specificity(self) -> None:
        policy = parse_policy(dedent('''\
            [[rule]]
            name = "broad"
            user = "postgres"
            prefer = true
            [[rule]]
            name = "narrow"
            comm = "postgres"
            score = -900
            '''), PATH)
        matched = policy.first_match(subject(comm="postgres", user="postgres"))
        assert matched is not None and matched.name == "broad"

    def test_unit_default_suffix_applies(self) -> None:
        policy = parse_policy(FULL, PATH)
        matched = policy.first_match(subject(unit="chromium.service"))
        assert matched is not None and matched.name == "rule 3"


class TestErrors:
    """Each error class: exact message, with file, line and rule."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param('''\
                [[rule]]
                name = "ssh"
                comm = "sshd"
                protect = true

                [[rule]]
                name = "db"
                comand = "postgres"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:8: rule \"db\": unknown key 'comand' (expected one "
                "of: name, comm, cmdline, exe, user, cgroup, unit, protect, score, prefer, force)",
                id="unknown-key"),
            pytest.param('''\
                [[rule]]
                comm = 5
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": 'comm' must be a string or a "
                "list of them, not 5",
                id="bad-type"),
            pytest.param('''\
                [[rule]]
                name = "db"
                user = ["postgres", true]
                protect = true
                ''',
                "/etc/oomlens/policy.toml:3: rule \"db\": 'user' must be a string, an integer "
                "uid or a list of them, not true",
                id="bad-type-in-list"),
            pytest.param('''\
                [[rule]]
                user = -1
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": 'user' uid must not be negative, "
                "not -1",
                id="negative-uid"),
            pytest.param('''\
                [[rule]]
                comm = "a"
                protect = true

                [[rule]]
                name = "everyone"
                prefer = 100
                ''',
                "/etc/oomlens/policy.toml:5: rule \"everyone\": matches every process: add "
                "comm, cmdline, exe, user, cgroup or unit",
                id="no-matcher"),
            pytest.param('''\
                [[rule]]
                name = "ssh"
                comm = "sshd"
                ''',
                "/etc/oomlens/policy.toml:1: rule \"ssh\": no action: add protect = true, "
                "score = N (-1000..1000) or prefer = N (1..1000)",
                id="no-action"),
            pytest.param('''\
                [[rule]]
                name = "ssh"
                score = -10
                comm = "sshd"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:5: rule \"ssh\": 2 actions (score, protect): "
                "keep one",
                id="two-actions"),
            pytest.param('''\
                [[rule]]
                comm = "a"
                protect = true
                [[rule]]
                comm = "b"
                name = "b"
                score = 1001
                ''',
                "/etc/oomlens/policy.toml:7: rule \"b\": 'score' must be an integer from -1000 "
                "to 1000, not 1001",
                id="score-out-of-range"),
            pytest.param('''\
                [[rule]]
                comm = "b"
                score = true
                ''',
                "/etc/oomlens/policy.toml:3: rule \"rule 1\": 'score' must be an integer from "
                "-1000 to 1000, not true",
                id="score-bool"),
            pytest.param('''\
                [[rule]]
                comm = "b"
                prefer = 0
                ''',
                "/etc/oomlens/policy.toml:3: rule \"rule 1\": 'prefer' must be an integer from "
                "1 to 1000 or true, not 0",
                id="prefer-zero"),
            pytest.param('''\
                [[rule]]
                comm = "b"
                prefer = "high"
                ''',
                "/etc/oomlens/policy.toml:3: rule \"rule 1\": 'prefer' must be an integer from "
                "1 to 1000 or true, not \"high\"",
                id="prefer-string"),
            pytest.param('''\
                [[rule]]
                comm = "b"
                protect = false
                ''',
                "/etc/oomlens/policy.toml:3: rule \"rule 1\": 'protect' must be true (or remove "
                "the key), not false",
                id="protect-false"),
            pytest.param('''\
                [[rule]]
                name = "java"
                cmdline = "java (-jar"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:3: rule \"java\": invalid cmdline regular expression "
                "'java (-jar': missing ), unterminated subpattern at position 5",
                id="bad-regex"),
            pytest.param('''\
                [[rule]]
                name = "java"
                cmdline = ["java", "kafka"]
                protect = true
                ''',
                "/etc/oomlens/policy.toml:3: rule \"java\": 'cmdline' must be one regular "
                "expression as a string (join alternatives with |), not an array",
                id="cmdline-list"),
            pytest.param('''\
                [[rule]]
                cmdline = ""
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": 'cmdline' is empty, which matches "
                "every command line",
                id="cmdline-empty"),
            pytest.param('''\
                [[rule]]
                name = "ssh"
                comm = "sshd"
                protect = true

                [[rule]]
                comm = "dropbear"
                protect = true

                [[rule]]
                comm = "mosh-server"
                name = "ssh"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:12: rule \"ssh\": duplicate name: rule \"ssh\" is "
                "already defined at line 1",
                id="duplicate-name"),
            pytest.param('''\
                [[rule]]
                name = "rule 2"
                comm = "a"
                protect = true

                [[rule]]
                comm = "b"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:6: rule \"rule 2\": duplicate name: rule \"rule 2\" "
                "is already defined at line 1",
                id="duplicate-default-name"),
            pytest.param('''\
                [[rule]]
                name = ""
                comm = "a"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": 'name' must be a non-empty "
                "string, not \"\"",
                id="empty-name"),
            pytest.param('''\
                [[rule]]
                comm = "a"
                protect = true
                force = "yes"
                ''',
                "/etc/oomlens/policy.toml:4: rule \"rule 1\": 'force' must be true or false, "
                "not \"yes\"",
                id="force-type"),
            pytest.param('''\
                [[rule]]
                comm = []
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": 'comm' is an empty list: give at "
                "least one value or remove it",
                id="empty-list"),
            pytest.param('''\
                [[rule]]
                user = ""
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": 'user' has an empty string",
                id="empty-string"),
            pytest.param('''\
                [[rule]]
                name = "journald"
                comm = "systemd-journald"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:3: rule \"journald\": comm 'systemd-journald' is 16 "
                "bytes, but the kernel keeps only the first 15 (TASK_COMM_LEN), so it never "
                "matches: use \"systemd-journal\", or match the command line",
                id="comm-too-long"),
            pytest.param('''\
                [[rule]]
                exe = "sshd"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": exe 'sshd' is not an absolute "
                "path (the /proc/PID/exe link is, e.g. '/usr/sbin/sshd')",
                id="exe-relative"),
            pytest.param('''\
                [[rule]]
                cgroup = "system.slice/ssh.service"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": cgroup 'system.slice/ssh.service' "
                "must start with '/' as /proc/PID/cgroup paths do, or be a glob",
                id="cgroup-relative"),
            pytest.param('''\
                [[rule]]
                unit = "/system.slice/ssh.service"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:2: rule \"rule 1\": unit '/system.slice/ssh.service' "
                "is not a unit name (for a cgroup path, use cgroup)",
                id="unit-path"),
            pytest.param('''\
                [limit]
                max_protected_share = "30%"
                ''',
                "/etc/oomlens/policy.toml:1: unknown table 'limit' (expected [limits] and "
                "[[rule]] tables)",
                id="unknown-table"),
            pytest.param('''\
                # top
                [[rule]]
                comm = "a"
                protect = true

                [[rules]]
                comm = "b"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:6: unknown top-level key 'rules' (expected [limits] "
                "and [[rule]] tables)",
                id="unknown-array"),
            pytest.param('''\
                # top
                version = 2
                ''',
                "/etc/oomlens/policy.toml:2: unknown top-level key 'version' (expected "
                "[limits] and [[rule]] tables)",
                id="unknown-top-level-key"),
            pytest.param('''\
                [rule]
                comm = "a"
                protect = true
                ''',
                "/etc/oomlens/policy.toml:1: write each rule as [[rule]], not [rule]",
                id="rule-not-array"),
            pytest.param('''\
                rule = ["sshd"]
                ''',
                "/etc/oomlens/policy.toml:1: 'rule' must be an array of tables: start each "
                "rule with [[rule]]",
                id="rule-array-of-strings"),
            pytest.param('''\
                [limits]
                max_protected_share = "30%"
                min_killable = "50%"
                ''',
                "/etc/oomlens/policy.toml:3: unknown key 'min_killable' (expected one of: "
                "max_protected_share, min_killable_share)",
                id="limits-unknown-key"),
            pytest.param('''\
                [[rule]]
                comm = "a"
                protect = true

                [limits]
                max_protected_share = "130%"
                ''',
                "/etc/oomlens/policy.toml:6: max_protected_share must be at most 100%, "
                "not \"130%\"",
                id="limits-over-100"),
            pytest.param('''\
                [limits]
                max_protected_share = 0
                ''',
                "/etc/oomlens/policy.toml:2: max_protected_share must be more than 0% and at "
                "most 100%, not 0%",
                id="limits-protect-nothing"),
            pytest.param('''\
                [limits]
                min_killable_share = "100%"
                ''',
                "/etc/oomlens/policy.toml:2: min_killable_share must be at least 0% and less "
                "than 100%, not 100%",
                id="limits-all-killable"),
            pytest.param('''\
                limits = 3
                ''',
                "/etc/oomlens/policy.toml:1: 'limits' must be a table ([limits]), not 3",
                id="limits-not-table"),
        ],
    )
    def test_message(self, text: str, message: str) -> None:
        assert str(error_of(text)) == message

    def test_attributes(self) -> None:
        error = error_of('[[rule]]\nname = "ssh"\ncomm = "sshd"\nprotect = 1\n')
        assert (error.path, error.line, error.rule) == (PATH, 4, "ssh")
        assert error.message == "'protect' must be true (or remove the key), not 1"
        assert isinstance(error, UsageError)

    def test_message_without_line_or_rule(self) -> None:
        assert str(PolicyError("p.toml", None, None, "empty")) == "p.toml: empty"
        assert str(PolicyError("p.toml", 3, None, "bad")) == "p.toml:3: bad"
        assert str(PolicyError("p.toml", 3, "x", "bad")) == 'p.toml:3: rule "x": bad'

    def test_hostile_rule_name_stays_on_one_line(self) -> None:
        error = error_of('[[rule]]\nname = "a\\nb\\"c"\ncomm = "x"\nscore = 5000\n')
        assert str(error) == (
            '/etc/oomlens/policy.toml:4: rule "a\\nb\\"c": '
            "'score' must be an integer from -1000 to 1000, not 5000"
        )

    def test_nothing_partial_is_returned(self) -> None:
        broken = FULL + '\n[[rule]]\ncomm = "late"\nscore = -2000\n'
        assert error_of(broken).line == 30


class TestErrorLines:
    """Finding the line when tomllib gives none: headers, keys, and fallbacks."""

    def test_header_with_spaces_and_comment(self) -> None:
        text = '''\
            [[rule]]
            comm = "a"
            protect = true

              [[  rule  ]]   # second
            comm = "b"
            '''
        error = error_of(text)
        assert (error.line, error.rule) == (5, "rule 2")
        assert error.message.startswith("no action")

    def test_key_in_a_later_rule_is_not_confused_with_an_earlier_one(self) -> None:
        text = '''\
            [[rule]]
            comm = "a"
            score = 10

            [[rule]]
            comm = "b"
            score = 10000
            '''
        assert error_of(text).line == 7

    def test_dotted_key(self) -> None:
        text = '''\
            [[rule]]
            comm = "a"
            name = "x"
            prefer = true
            [[rule]]
            user.name = "root"
            protect = true
            '''
        error = error_of(text)
        assert (error.line, error.rule) == (6, "rule 2")
        assert error.message == "'user' must be a string, an integer uid or a list of them, " \
                                "not a table"

    def test_key_from_a_subtable_falls_back_to_the_rule_header(self) -> None:
        text = '''\
            [[rule]]
            comm = "a"
            protect = true
            [rule.extra]
            x = 1

            [[rule]]
            comm = "b"
            extra = 1
            protect = true
            '''
        error = error_of(text)
        assert (error.line, error.rule) == (1, "rule 1")
        assert error.message.startswith("unknown key 'extra'")

    def test_key_inside_an_inline_table(self) -> None:
        text = '''\
            [[rule]]
            comm = "a"
            protect = true

            [[rule]]
            match = { comm = "b" }
            protect = true
            '''
        assert error_of(text).line == 6

    def test_inline_array_of_rules_uses_its_line(self) -> None:
        text = '''\
            # rules written inline

            rule = [
              { comm = "a", protect = true },
              { comm = "b", score = 2000 },
            ]
            '''
        error = error_of(text)
        assert (error.line, error.rule) == (3, "rule 2")

    def test_quoted_keys(self) -> None:
        text = '''\
            [["rule"]]
            "comm" = "a"
            'score' = -3000
            '''
        assert error_of(text).line == 3

    def test_header_inside_a_multiline_string_is_not_a_header(self) -> None:
        text = '''\
            [[rule]]
            name = """java
            [[rule]]
            """
            comm = "java"
            protect = true

            [[rule]]
            name = "two"
            score = 10
            '''
        error = error_of(text)
        assert (error.line, error.rule) == (8, "two")
        assert error.message.startswith("matches every process")

    def test_limits_as_inline_table(self) -> None:
        error = error_of('# x\nlimits = { max_protected_share = "2" }\n')
        assert error.line == 2
        assert error.message.startswith("max_protected_share must be at most 100%")

    def test_limits_as_dotted_keys(self) -> None:
        error = error_of('# x\nlimits.max_protected_share = -1\n')
        assert error.line == 2
        assert error.message == "max_protected_share must not be negative, not -1"


class TestSyntaxErrors:
    @pytest.mark.parametrize(
        ("text", "line", "message"),
        [
            ('[[rule]]\ncomm = "sshd\nprotect = true\n', 2,
             "invalid TOML: Illegal character '\\n' (column 13)"),
            ('[[rule]]\ncomm = "a"\ncomm = "b"\n', 3,
             "invalid TOML: Cannot overwrite a value (column 11)"),
            ('[[rule]]\n\n\nprotect = yes\n', 4, "invalid TOML: Invalid value (column 11)"),
            ('# ok\n\nx = [\n', 3, "invalid TOML: Invalid value (at end of document)"),
            ('x = """never closed\n\n', 1,
             "invalid TOML: Unterminated string (at end of document)"),
        ],
    )
    def test_line_from_tomllib(self, text: str, line: int, message: str) -> None:
        error = error_of(text)
        assert (error.line, error.rule, error.message) == (line, None, message)
        assert str(error) == f"{PATH}:{line}: {message}"


class TestShares:
    @pytest.mark.parametrize(
        ("value", "share"),
        [("30%", 0.30), ("30 %", 0.30), (" 12.5% ", 0.125), ("100%", 1.0), ("0%", 0.0),
         ("0.3", 0.3), (".5", 0.5), (0.3, 0.3), (1, 1.0), (0, 0.0), ("1", 1.0)],
    )
    def test_parse(self, value: object, share: float) -> None:
        assert math.isclose(parse_share(value, "max_protected_share"), share)

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("30", 'share must be at most 100%, not "30" (a number without % is a fraction: '
                   'for 30 percent write "30%")'),
            (30, 'share must be at most 100%, not 30 (a number without % is a fraction: '
                 'for 30 percent write "30%")'),
            ("130%", 'share must be at most 100%, not "130%"'),
            (-0.1, "share must not be negative, not -0.1"),
            ("-10%", 'share must be a percentage such as "30%" or a fraction such as 0.3, '
                     'not "-10%"'),
            ("%", 'share must be a percentage such as "30%" or a fraction such as 0.3, '
                  'not "%"'),
            ("thirty", 'share must be a percentage such as "30%" or a fraction such as 0.3, '
                       'not "thirty"'),
            (True, 'share must be a percentage such as "30%" or a fraction such as 0.3, '
                   "not true"),
            (math.nan, 'share must be a percentage such as "30%" or a fraction such as 0.3, '
                       "not nan"),
            ([0.3], 'share must be a percentage such as "30%" or a fraction such as 0.3, '
                    "not an array"),
        ],
    )
    def test_reject(self, value: object, message: str) -> None:
        with pytest.raises(ValueError) as caught:
            parse_share(value, "share")
        assert str(caught.value) == message

    @pytest.mark.parametrize(
        ("key", "share", "ok"),
        [("max_protected_share", 0.0, False), ("max_protected_share", 0.01, True),
         ("max_protected_share", 1.0, True), ("min_killable_share", 0.0, True),
         ("min_killable_share", 0.99, True), ("min_killable_share", 1.0, False)],
    )
    def test_bounds(self, key: str, share: float, ok: bool) -> None:
        if ok:
            check_share_bounds(key, share)
        else:
            with pytest.raises(ValueError, match=f"^{key} must be"):
                check_share_bounds(key, share)

    def test_percent_and_fraction_in_a_file(self) -> None:
        policy = parse_policy('[limits]\nmax_protected_share = "5 %"\nmin_killable_share = 0\n',
                              PATH)
        assert policy.limits == Limits(max_protected_share=0.05, min_killable_share=0.0)
