"""train.host_memory: with ``cached`` freed large CPU tensors' memory is reused, not faulted in again."""

import os
import subprocess
import sys

import pytest

from tinrec.hostmem import _glibc, configure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A training step's pattern: several large temporaries (32 MiB each), freed at the end of the step; prints the
# minor page faults of each of 12 steps.
SCRIPT = """
import resource, sys, torch
from tinrec.hostmem import configure
print(configure(sys.argv[1]))
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(8 * 2**20)
def step():
    a = x + 1; b = a * x; c = torch.cat([a, b]); return float(c[-1])
per_step = []
for _ in range(12):
    before = faults(); step(); per_step.append(faults() - before)
print(*per_step)
"""


def _steady_state_faults(mode):
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    applied, per_step = p.stdout.splitlines()[-2:]
    return applied == "True", sum(int(f) for f in per_step.split()[4:])  # after the first steps


@pytest.mark.skipif(_glibc() is None, reason="the setting acts on glibc's malloc")
def test_cached_reuses_freed_memory_system_faults_it_in_again():
    applied, cached = _steady_state_faults("cached")
    _, system = _steady_state_faults("system")
    assert applied
    assert system > 8 * 20000  # every step faults its 128 MiB of fresh mmap'ed pages in again (4 KiB each)
    assert cached < system / 3


def test_unknown_mode_is_refused_with_the_key_name():
    with pytest.raises(ValueError, match="train.host_memory: expected one of cached, system"):
        configure("pooled")
