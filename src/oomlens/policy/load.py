"""The policy file from disk, for `enforce` and `guard` (apart from both daemons so
that the guard does not load the enforcer's journal)."""

from __future__ import annotations

from oomlens.errors import NotFound
from oomlens.policy.rules import Policy, parse_policy
from oomlens.system.procfs import read_text, translate_os_error


def load_policy(path: str) -> Policy:
    """Read and validate the policy file (nothing is applied from an invalid one)."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise NotFound(f"no policy file at {path} (an example: contrib/policy.toml)") from None
    except OSError as err:
        raise translate_os_error(err, path) from err
    return parse_policy(text, path)
