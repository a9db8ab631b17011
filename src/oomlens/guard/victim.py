"""Whom the guard kills: the kernel's own order in the domain, adjusted by policy, and
never a bystander.

Pure: the daemon builds a `Candidate` per member of the domain from its snapshot
(`ranking.rank_domain` gives points and rank, the policy file's first matching rule
gives the action) and `choose` returns at most one victim with its reasoning. The
exclusions come first, each a named rule in a fixed order; among the rest, anything
preferred dies first, else the kernel's pick. When nothing acceptable is left the
answer is no one: the guard alerts rather than kill a process the user shielded.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oomlens.errors import UsageError
from oomlens.guard.triggers import format_size
from oomlens.kernel.task import OOM_SCORE_ADJ_MIN
from oomlens.policy.match import quote_value
from oomlens.policy.rules import Action


@dataclass(frozen=True, slots=True)
class Candidate:
    """One member of the domain as the guard weighs it.

    `points` is the kernel model's badness in this domain and `rank` its kill order
    (1 dies first); both are None for a task the kernel would never pick.
    `policy_action` is the action of the policy file's first matching rule
    ("protect", "prefer", "score") or None.
    """

    pid: int
    comm: str
    cmdline: str
    uid: int
    start_time_ticks: int
    points: int | None
    rank: int | None
    oom_score_adj: int
    rss_bytes: int
    cgroup: str | None
    kthread: bool
    policy_action: str | None = None

    def __post_init__(self) -> None:
        if (self.points is None) != (self.rank is None):
            raise ValueError(f"pid {self.pid}: points and rank are both set or both None")
        if self.policy_action is not None and self.policy_action not in set(Action):
            raise ValueError(f"pid {self.pid}: unknown policy action {self.policy_action!r}")

    @property
    def label(self) -> str:
        """`pid 4242 (java)`; an odd comm is quoted so it cannot fake a second line."""
        return f"pid {self.pid} ({quote_value(self.comm)})"


@dataclass(frozen=True, slots=True)
class Preferences:
    """What the user asked beyond the policy file: `--avoid` and `--prefer` regexes
    (searched in the command name and in the command line), and the pids to spare:
    the guard itself (`self_pid`) and others (`spare_pids`: its session's shell with
    --ignore-session, its hooks)."""

    avoid: tuple[re.Pattern[str], ...] = ()
    prefer: tuple[re.Pattern[str], ...] = ()
    self_pid: int = 0
    spare_pids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Choice:
    """The victim (None: nothing acceptable), the reasoning one line each, and who
    was passed over and why."""

    victim: Candidate | None
    why: tuple[str, ...]
    skipped: tuple[tuple[Candidate, str], ...]


def parse_patterns(texts: Sequence[str], what: str) -> tuple[re.Pattern[str], ...]:
    """Each of `texts` compiled for `re.search`; UsageError (one line naming `what`)
    for a bad one, or an empty one (it would match every process)."""
    patterns = []
    for text in texts:
        if not text:
            raise UsageError(f"{what}: an empty pattern matches every process")
        try:
            patterns.append(re.compile(text))
        except re.error as error:
            where = "" if error.pos is None else f" at position {error.pos}"
            raise UsageError(
                f"{what}: invalid regular expression {text!r}: {error.msg}{where}"
            ) from None
    return tuple(patterns)


def _regex(pattern: re.Pattern[str]) -> str:
    text = pattern.pattern
    return f"/{text}/" if text.isprintable() else json.dumps(text)


def _search(patterns: tuple[re.Pattern[str], ...], option: str, c: Candidate) -> str | None:
    """Which of `patterns` matches `c`, said as `--avoid /x/ matches its command name`."""
    for pattern in patterns:
        if pattern.search(c.comm):
            return f"{option} {_regex(pattern)} matches its command name"
        if pattern.search(c.cmdline):
            return f"{option} {_regex(pattern)} matches its command line"
    return None


# The exclusions, in the order they are tried: each says why `c` is not to be killed,
# or None. The first to answer is the reason given.


def _is_global_init(c: Candidate, prefs: Preferences) -> str | None:
    """mm/oom_kill.c: oom_unkillable_task(), is_global_init(): its death panics."""
    if c.pid == 1:
        return "pid 1 (init): its death panics the kernel, which never kills it"
    return None


def _is_kthread(c: Candidate, prefs: Preferences) -> str | None:
    """mm/oom_kill.c: oom_unkillable_task(), PF_KTHREAD: no user memory to free."""
    return "kernel thread: the kernel never kills one (PF_KTHREAD)" if c.kthread else None


def _is_spared(c: Candidate, prefs: Preferences) -> str | None:
    """The guard must outlive the hog; its session is the user's way back in."""
    if c.pid == prefs.self_pid:
        return "the guard itself"
    if c.pid in prefs.spare_pids:
        return "spared: the guard's own session or helper"
    return None


def _is_adj_min(c: Candidate, prefs: Preferences) -> str | None:
    """mm/oom_kill.c: oom_badness() skips OOM_SCORE_ADJ_MIN: whoever set it meant never."""
    if c.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return f"oom_score_adj {OOM_SCORE_ADJ_MIN}: the kernel never kills it, nor do we"
    return None


def _is_ineligible(c: Candidate, prefs: Preferences) -> str | None:
    """mm/oom_kill.c: oom_badness() returns LONG_MIN for a task without an mm."""
    if c.points is None:
        return "ineligible: the kernel gives it no badness here (no memory of its own)"
    return None


def _is_avoided(c: Candidate, prefs: Preferences) -> str | None:
    """Avoid wins over prefer: sparing a process is the mistake that can be undone."""
    matched = _search(prefs.avoid, "--avoid", c)
    if matched:
        return f"avoided: {matched}"
    if c.policy_action == Action.PROTECT:
        return "avoided: a protect rule of the policy file matches it"
    return None


_Rule = Callable[[Candidate, Preferences], str | None]
EXCLUSIONS: tuple[tuple[str, _Rule], ...] = (
    ("pid 1", _is_global_init),
    ("kernel threads", _is_kthread),
    ("spared", _is_spared),
    (f"oom_score_adj {OOM_SCORE_ADJ_MIN}", _is_adj_min),
    ("ineligible", _is_ineligible),
    ("avoided", _is_avoided),
)
"""(how the summary counts it, the rule), in the order they are tried."""


def _preferred(c: Candidate, prefs: Preferences) -> str | None:
    if matched := _search(prefs.prefer, "--prefer", c):
        return matched
    if c.policy_action == Action.PREFER:
        return "a prefer rule of the policy file matches it"
    return None


def _kernel_order(c: Candidate) -> tuple[int, int]:
    """Highest points first, ties by the kernel's rank (which breaks them the way
    mm/oom_kill.c: oom_evaluate_task() does: the later-scanned task)."""
    assert c.points is not None and c.rank is not None
    return (-c.points, c.rank)


def _facts(c: Candidate) -> str:
    return (f"{c.points} points, rank {c.rank}, RSS {format_size(c.rss_bytes)}, "
            f"oom_score_adj {c.oom_score_adj}")


def choose(candidates: Sequence[Candidate], prefs: Preferences, *,
           domain: str = "this domain") -> Choice:
    """At most one victim among `candidates` (the members of `domain`), with why."""
    skipped: list[tuple[Candidate, str]] = []
    counts: Counter[str] = Counter()
    acceptable: list[Candidate] = []
    for c in candidates:
        excluded = next(((name, reason) for name, rule in EXCLUSIONS
                         if (reason := rule(c, prefs)) is not None), None)
        if excluded is None:
            acceptable.append(c)
        else:
            counts[excluded[0]] += 1
            skipped.append((c, excluded[1]))
    passed = ", ".join(f"{counts[name]} {name}" for name, _ in EXCLUSIONS if counts[name])
    why = [f"{len(candidates)} processes in {domain}; passed over: {passed or 'none'}"]
    if not acceptable:
        held = f"all {len(candidates)} passed over ({passed})" if candidates else "no processes"
        why.append(f"nothing acceptable to kill in {domain}: {held}; not picking a bystander")
        return Choice(None, tuple(why), tuple(skipped))
    order = sorted(acceptable, key=_kernel_order)
    victim, picked = _pick(order, prefs)
    why.extend(picked)
    _, victim_rank = _kernel_order(victim)
    why.extend(f"ranked ahead but passed over: {c.label}: {reason}"
               for c, reason in skipped if c.rank is not None and c.rank < victim_rank)
    why.append(f"victim: {victim.label}: {_facts(victim)}")
    return Choice(victim, tuple(why), tuple(skipped))


def _pick(order: list[Candidate], prefs: Preferences) -> tuple[Candidate, list[str]]:
    """The first preferred candidate in the kernel's order, else the kernel's first;
    with the lines that say which."""
    preferred = [(c, reason) for c in order if (reason := _preferred(c, prefs))]
    if not preferred:
        return order[0], ["none preferred: the kernel's order decides"]
    victim, reason = preferred[0]
    lines = [f"preferred: {victim.label}: {reason}; first of {len(preferred)} preferred in the "
             "kernel's order"]
    if victim is not order[0]:
        lines.append(f"it goes ahead of the kernel's own first choice, {order[0].label} "
                     f"({_facts(order[0])})")
    return victim, lines
