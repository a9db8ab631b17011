"""policy/tomltext.py: lines of headers and keys in TOML text, skipping multi-line
strings; tomllib's syntax error positions; values as error messages show them."""

from __future__ import annotations

import datetime
import tomllib
from textwrap import dedent

import pytest

from oomlens.policy.tomltext import TomlLayout, shown, syntax_error_line


def layout(text: str) -> TomlLayout:
    return TomlLayout.of(dedent(text))


class TestMultilineStrings:
    def test_lines_inside_are_hidden(self) -> None:
        found = layout('''\
            a = """one
            [[rule]]
            two"""
            [[rule]]
            ''')
        assert found.lines == ('a = """one', None, None, "[[rule]]", "")
        assert found.array_headers("rule") == (4,)

    def test_literal_strings(self) -> None:
        found = layout("""\
            a = '''
            [[rule]]
            '''
            [[rule]]
            """)
        assert found.array_headers("rule") == (4,)

    def test_escaped_quotes_do_not_close(self) -> None:
        found = layout('''\
            a = """ \\""" still open
            [[rule]]
            """
            [[rule]]
            ''')
        assert found.array_headers("rule") == (4,)

    @pytest.mark.parametrize(
        "line",
        ['comm = "a" # not """ a string', "# nor '''", 'b = "x\\"\\"\\""', "c = '\"\"\"'"],
        ids=["comment", "comment-literal", "escaped-quotes", "in-literal-string"],
    )
    def test_delimiters_that_open_nothing(self, line: str) -> None:
        found = TomlLayout.of(f"{line}\n[[rule]]\n")
        assert found.lines[0] == line
        assert found.array_headers("rule") == (2,)

    def test_opened_and_closed_on_one_line(self) -> None:
        assert layout('a = """x"""\n[[rule]]\n').array_headers("rule") == (2,)

    def test_agrees_with_tomllib(self) -> None:
        text = dedent('''\
            [[rule]]
            a = """
            [[rule]]
            """
            b = \'\'\'[[rule]]\'\'\'  # [[rule]]
            [[rule]]
            [[ "rule" ]]
            ''')
        assert len(tomllib.loads(text)["rule"]) == len(TomlLayout.of(text).array_headers("rule"))


class TestLines:
    TEXT = dedent('''\
        top = 1
        [limits]
        max_protected_share = "30%"
        [[rule]]
        comm = "a"
        "score" = 5
        [rule.sub]
        force = true
        [[rule]]   # two
        force = false
        ''')

    def test_table_line(self) -> None:
        found = TomlLayout.of(self.TEXT)
        assert found.table_line("limits") == 2
        assert found.table_line("rule") == 4
        assert found.table_line("missing") is None

    def test_key_line_within_its_table(self) -> None:
        found = TomlLayout.of(self.TEXT)
        assert found.key_line("comm", 4) == 5
        assert found.key_line("score", 4) == 6
        assert found.key_line("force", 4) is None
        assert found.key_line("force", 9) == 10
        assert found.key_line("max_protected_share", 2) == 3

    def test_top_level_keys_end_at_the_first_header(self) -> None:
        found = TomlLayout.of(self.TEXT)
        assert found.key_line("top", 0) == 1
        assert found.key_line("comm", 0) is None

    def test_a_table_line_that_is_no_header_has_no_key_lines(self) -> None:
        found = TomlLayout.of(self.TEXT)
        assert found.key_line("comm", 5) is None
        assert found.key_line("comm", None) is None

    def test_array_headers_with_spaces_quotes_and_comments(self) -> None:
        found = layout('''\
            [[rule]]
              [[ rule ]] # x
            [["rule"]]
            [['rule']]
            [[rule.sub]]
            [[rules]]
            [rule]
            ''')
        assert found.array_headers("rule") == (1, 2, 3, 4)


class TestSyntaxErrorLine:
    @pytest.mark.parametrize(
        ("text", "line", "message"),
        [
            ("a = 1\nb = \n", 2, "Invalid value (column 5)"),
            ("a = [\n\n", 1, "Invalid value (at end of document)"),
            ("a = 1\r\n\r\nb = \r\n", 3, "Invalid value (column 5)"),
            ("a = 1\r\nb = 'x\r\n", 2, 'Expected "\'" (at end of document)'),
        ],
    )
    def test_from_tomllib(self, text: str, line: int, message: str) -> None:
        with pytest.raises(tomllib.TOMLDecodeError) as caught:
            tomllib.loads(text)
        assert syntax_error_line(str(caught.value), text) == (line, message)


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (3, "3"), (0.5, "0.5"), ("a\nb", '"a\\nb"'),
     ("é", '"é"'), ([1], "an array"), ({"a": 1}, "a table"),
     (datetime.date(2024, 5, 1), "a date/time")],
)
def test_shown(value: object, text: str) -> None:
    assert shown(value) == text
