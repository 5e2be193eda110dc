"""The CLI answers at once and says what it means: fast --help, solver variants from the command line, parameter
errors that name the parameter, a dry run with a time estimate, task defaults spelled out, the GPU check without a GPU."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench.cli import main as cli
from kit.grids import REPO, bench_env


def test_help_does_not_import_torch():
    """`python -m bench --help`, a command's --help and listing the plugins (their modules bind torch lazily,
    bench/core/lazy.py) must not pay for torch: measured by what gets imported, not by a timer. `list priors` does:
    the architectures are torch modules."""
    code = ("import sys; from bench.cli import main\n"
            "for argv in (['--help'], ['run', '--help'], ['check', '--help'], ['report', '--help'],\n"
            "             ['list', 'tasks'], ['list', 'solvers'], ['list', 'datasets'], ['list', 'grids']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=bench_env(), capture_output=True, text=True)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH", r.stderr


@pytest.mark.parametrize("spec,needle", [("aipo[alpah=0.1]", "unknown parameter 'alpah' for solver 'aipo'; valid:"),
                                         ("aipo[alpha=abc]", "parameter 'alpha' of solver 'aipo' must be a number"),
                                         ("aipo[alpha=-1.0]", "parameter 'alpha' of solver 'aipo' must be > 0, got -1.0")])
def test_bad_solver_parameter_from_the_cli_names_it(spec, needle, capsys):
    assert cli(["run", "--grid", "smoke", "--solver", spec, "--dry-run"]) == 2
    assert needle in capsys.readouterr().err


def test_solver_variant_from_the_cli_joins_the_run(capsys, tmp_path):
    assert cli(["run", "--grid", "smoke", "--solver", "aipo[alpha=0.01],aipo", "--dry-run",
                "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "32 units" in err and "image-passes of the prior" in err and "estimated wall time" in err


def test_list_solvers_spells_out_task_defaults(capsys):
    assert cli(["list", "solvers"]) == 0
    out = capsys.readouterr().out
    block = out.split("latent-lbfgs", 1)[1].split("\n", 4)
    assert "lr: float = task default (cs: 0.1, denoise: 1.0, inpaint: 1.0)" in out and "= None" not in "".join(block[:4])


def test_gpu_check_without_a_gpu_exits_cleanly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the check would run for real")
    r = subprocess.run([sys.executable, "-m", "bench.perf.gpu_check"], cwd=REPO, env=bench_env(), capture_output=True,
                       text=True)
    assert r.returncode == 0 and "no CUDA device" in r.stdout


def test_flop_count_of_a_prior_pass_is_positive_and_batch_independent():
    from bench.perf.measure import flops_per_image
    from bench.priors import catalog

    m = catalog.load_prior("glow-xs").model
    a, b = flops_per_image(m, batch=4), flops_per_image(m, batch=16)
    assert a > 1e5 and a == pytest.approx(b, rel=0.01)   # per-batch work (1x1-conv weights) is tiny
