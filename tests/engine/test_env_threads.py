"""ferlib.engine.env.configure_threads: OMP_NUM_THREADS honoured, explicit counts set, bad counts refused.

Each case runs in a fresh interpreter: torch accepts the inter-op thread count only once, before any
inter-op work, so the pytest process cannot show it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run_py(code: str, **env) -> dict:
    full = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    full.update(env)
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


PROBE = """
import json, torch
from ferlib.engine.env import configure_threads
default = torch.get_num_threads()
got = configure_threads({arg})
print(json.dumps({{"default": default, "got": got, "now": torch.get_num_threads(),
                  "interop": torch.get_num_interop_threads()}}))
"""


def test_none_honours_omp_num_threads():
    r = run_py(PROBE.format(arg="None"), OMP_NUM_THREADS="1")
    assert r["got"] == r["now"] == 1


def test_none_without_env_keeps_torch_default():
    r = run_py(PROBE.format(arg="None"))
    assert r["got"] == r["now"] == r["default"] >= 1


def test_explicit_count_sets_intra_and_interop_and_wins_over_env():
    code = """
import json, torch
from ferlib.engine.env import configure_threads
a = configure_threads(2)
interop = torch.get_num_interop_threads()
b = configure_threads(1)   # inter-op is fixed by now: torch refuses it, skipped quietly
print(json.dumps({"a": a, "b": b, "interop": interop, "interop_after": torch.get_num_interop_threads()}))
"""
    r = run_py(code, OMP_NUM_THREADS="1")
    assert r == {"a": 2, "b": 1, "interop": 2, "interop_after": 2}


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_count_is_refused(bad):
    from ferlib.engine.env import configure_threads

    with pytest.raises(ValueError, match="positive"):
        configure_threads(bad)


def test_unusable_env_value_is_ignored():
    r = run_py(PROBE.format(arg="None"), OMP_NUM_THREADS="lots")
    assert r["got"] == r["default"]
