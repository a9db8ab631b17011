"""`oomlens simulate`: OOM kills predicted, and OOM kills made to happen where they can
hurt nothing, with the prediction checked against what the kernel did.

Pure: `whatif.py` (the kill order with what-if oom_score_adj values, what each kill
frees), `verdict.py` (a prediction against the kernel's choice), `safety.py` (what
the host can spare, the refusals). The shell: `follow.py` (the kernel's OOM reports
from /dev/kmsg as they come), `sandboxrun.py` (a command in a throwaway memory
cgroup), `trigger.py` (a real OOM in an existing cgroup, SysRq-f). The JSON and the
text are cli/render/simulate.py's.
"""
