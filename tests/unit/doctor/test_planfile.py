"""doctor/planfile.py: a plan written and read back is the same plan (hostile strings
included), reads as a person expects, and anything apply could not do safely is
refused with the file and the item named."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from oomlens.doctor.plan import ItemKind, Plan, PlanItem
from oomlens.doctor.planfile import format_plan, parse_plan
from oomlens.errors import UsageError
from oomlens.policy.dropin import dropin_text

PATH = "/root/plan.toml"
DROPIN = "/etc/systemd/system/ssh.service.d/50-oomlens-oom.conf"
HOSTILE = "a \"quoted\" \\back\\slash\ttab\x7fdel\x01ctl ünï ''' end'"
PLAN = Plan("c0ffee01", "2025-06-15T10:00:00+00:00", "db1", "b00t", "6.1.0-18-amd64", (
    PlanItem(ItemKind.SYSCTL, "vm.panic_on_oom", "1", "0", "panic-on-oom: it panics",
             "panic-on-oom"),
    PlanItem(ItemKind.OOM_SCORE_ADJ, "400", "0", "-900", HOSTILE, "unprotected-service",
             pid=400, start_time_ticks=4321, comm="a) R 1 (x", cmdline=HOSTILE),
    PlanItem(ItemKind.DROPIN, DROPIN, None, dropin_text("ssh.service", -900), "w", "f",
             unit="ssh.service"),
    PlanItem(ItemKind.POLICY, "/etc/oomlens/policy.toml", "old\r\nwith CR\n", "x'''y\n\n",
             "w", "f", manual=True, commands=("add these", HOSTILE)),
    PlanItem(ItemKind.SWAPFILE, "/swapfile", None, "4294967296", "w", "no-swap", manual=True,
             commands=("swapon /swapfile",)),
))


def test_round_trip() -> None:
    assert parse_plan(format_plan(PLAN, PATH), PATH) == PLAN


def test_reads_as_written() -> None:
    text = format_plan(PLAN, PATH)
    assert text.startswith("# oomlens doctor plan: review it, delete the items you do not "
                           "want, then\n#   oomlens apply /root/plan.toml --dry-run\n")
    assert "`oomlens undo --plan c0ffee01` restores every value" in text
    # A drop-in is shown as it will be written; a missing file has no `before`.
    assert "after = '''\n# Written by oomlens (oomlens systemd-dropin)" in text
    dropin = tomllib.loads(text)["item"][2]
    assert "before" not in dropin and dropin["unit"] == "ssh.service"
    assert 'kind = "sysctl"\ntarget = "vm.panic_on_oom"\nbefore = "1"\nafter = "0"\n' in text


def _broken(replace: tuple[str, str] | None = None, **item: object) -> str:
    text = format_plan(dataclasses.replace(PLAN, items=(PlanItem(
        **{"kind": ItemKind.SYSCTL, "target": "vm.swappiness", "before": "60", "after": "61",
           "why": "w", "finding": "f", **item}),)), PATH)  # type: ignore[arg-type]
    return text if replace is None else text.replace(*replace)


@pytest.mark.parametrize(("text", "message"), [
    ("schema = [", "not a plan file: "),
    (_broken(('schema = "oomlens.plan/1"', 'schema = "oomlens.plan/2"')),
     "plan: schema must be 'oomlens.plan/1', not 'oomlens.plan/2'"),
    (_broken(('id = "c0ffee01"', 'id = "../../etc/x"')),
     "plan: id '../../etc/x' must be letters, digits, '-' and '_'"),
    (_broken(('host = "db1"\n', "")), "plan: missing `host`"),
    (_broken(target="vm/../../../etc/shadow"),
     "item 1: 'vm/../../../etc/shadow' is not a vm. or kernel. sysctl name"),
    (_broken(target="net.ipv4.ip_forward"), "item 1: 'net.ipv4.ip_forward' is not a vm. or"),
    (_broken(after="1\n2"), "item 1: a sysctl needs a one-line `after` value"),
    (_broken(('kind = "sysctl"', 'kind = "shell"')), "item 1: unknown kind 'shell'"),
    (_broken(kind=ItemKind.OOM_SCORE_ADJ, target="400", before="0", after="-1001", pid=400,
             start_time_ticks=1), "item 1: `before` and `after` must be oom_score_adj values"),
    (_broken(kind=ItemKind.OOM_SCORE_ADJ, target="401", before="0", after="1", pid=400,
             start_time_ticks=1), "item 1: an oom_score_adj item needs `pid` (= target)"),
    (_broken(kind=ItemKind.POLICY, target="/etc/oomlens/policy.toml", before="mine"),
     "item 1: oomlens writes a policy file only where there is none"),
    (_broken(kind=ItemKind.DROPIN, target="relative.conf"),
     "item 1: a file's target must be an absolute path"),
    (_broken(kind=ItemKind.SWAPFILE, target="/swapfile"),
     "item 1: a swap file item is manual: oomlens does not create swap"),
    (_broken(("pid = 400", "pid = true"), kind=ItemKind.OOM_SCORE_ADJ, target="400",
             before="0", after="1", pid=400, start_time_ticks=1),
     "item 1: `pid` must be a int, not True"),
    (_broken().replace("[[item]]", "[item]"), "plan: `item` must be an array of tables"),
])
def test_refusals_name_the_file_and_the_item(text: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_plan(text, PATH)
    assert str(err.value).startswith(f"{PATH}: ")
    assert message in str(err.value)
