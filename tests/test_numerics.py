"""Portable CPU numerics (bench/core/numerics.py): importing bench caps the CPU code path, the user can override it, rows
record it, and the regression check names it when two runs differ."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from bench.core import numerics
from bench.verify.check import provenance_notes

x86_only = pytest.mark.skipif(not numerics.is_x86(), reason="the caps apply to x86-64 CPUs only")
PROBE = "import json, os, bench; print(json.dumps({k: os.environ.get(k) for k in bench.core.numerics.PORTABLE_ISA}))"


def _env_after_import(**env):
    base = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ISA and k != numerics.SWITCH}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


@x86_only
def test_import_caps_every_library_at_avx2():
    assert _env_after_import() == numerics.PORTABLE_ISA


@x86_only
def test_user_values_and_native_switch_win():
    got = _env_after_import(ONEDNN_MAX_CPU_ISA="ALL")
    assert got["ONEDNN_MAX_CPU_ISA"] == "ALL" and got["MKL_CBWR"] == "AVX2"
    assert _env_after_import(FLOWBENCH_CPU_ISA="native") == {k: None for k in numerics.PORTABLE_ISA}


@x86_only
def test_describe_names_the_caps():
    assert "onednn AVX2" in numerics.describe() and "mkl AVX2" in numerics.describe()


def test_check_notes_a_different_code_path():
    ref = pd.DataFrame({"cpu_isa": ["avx2 (onednn AVX2, mkl AVX2)"], "torch_threads": [1]})
    cur = pd.DataFrame({"cpu_isa": ["avx512 (onednn native, mkl native)"], "torch_threads": [1]})
    notes = provenance_notes(cur, ref)
    assert len(notes) == 1  # threads agree; device and torch_version are recorded on neither side
    assert notes[0].startswith("cpu_isa differs: reference avx2") and "this run avx512" in notes[0]
    assert provenance_notes(ref, ref.copy()) == []
