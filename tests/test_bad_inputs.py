"""The bad-input catalogue: every bad input across the CLI, grid files, dataset paths and checkpoints
gives ONE line naming the bad value, exit status 2, no traceback, and nothing half-written.

Cases run in-process through ``bench.cli.main`` (fast); a few also run as real subprocesses to prove the whole
path (``python -m bench``) prints no traceback."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import cli
from bench.store import parts as store
from kit.grids import make_checkpoint, run_bench, toml_value, write_grid


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = make_checkpoint(d / "good.pt", "realnvp")
    truncated = d / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:4000])
    garbage = d / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 50)
    # weights of the xs preset under a config that claims the s preset
    payload = torch.load(good, weights_only=True)
    cfg = json.loads(payload["config"])
    cfg.update(preset="s", hidden=16, n_checker=2, n_channel=2, n_final=2)
    payload["config"] = json.dumps(cfg)
    mismatched = d / "mismatched.pt"
    torch.save(payload, mismatched)
    a_file = d / "a-file"
    a_file.write_text("x")
    cfg_huge = json.loads(payload["config"])
    cfg_huge.update(hidden=10 ** 6)
    huge = d / "huge.pt"
    torch.save({**payload, "config": json.dumps(cfg_huge)}, huge)
    nan_payload = torch.load(good, weights_only=True)
    first = next(k for k, v in nan_payload["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    nan_payload["state_dict"][first].view(-1)[1] = float("nan")
    nan_weights = d / "nan-weights.pt"
    torch.save(nan_payload, nan_weights)
    from PIL import Image

    big = d / "big-images"
    big.mkdir()
    Image.new("L", (14000, 14000)).save(big / "big.png")
    flt = d / "float-images"
    flt.mkdir()
    Image.fromarray(np.full((32, 32), 200.0, dtype=np.float32)).save(flt / "f.tif")
    Image.fromarray(np.zeros((32, 32), dtype=np.float32)).save(flt / "g.tif")
    (d / "plugins").mkdir()
    (d / "plugins" / "broken_plugin_mod.py").write_text("def oops(:\n    pass\n")
    # an error message carrying terminal escapes, a bell and a line break: none of them may reach the terminal
    (d / "plugins" / "ansi_plugin_mod.py").write_text(
        'raise RuntimeError("\\x1b[31mboom\\x1b[0m\\x07\\r\\nsecond line \\x1b]0;title\\x07")\n')
    return {"d": d, "good": str(good), "truncated": str(truncated), "garbage": str(garbage),
            "mismatched": str(mismatched), "a_file": a_file, "huge": str(huge), "big_folder": str(big),
            "float_folder": str(flt), "nan_weights": str(nan_weights)}


def _grid(kit, name, **keys):
    keys.setdefault("priors", [kit["good"]])
    keys.setdefault("solvers", ["zero-init"])
    keys.setdefault("tasks", ["denoise"])
    return str(write_grid(kit["d"] / f"{name}.toml", **keys))


def _raw_grid(kit, name, text):
    p = kit["d"] / f"{name}.toml"
    p.write_text(text)
    return str(p)


def _bytes_grid(kit, name, data: bytes):
    p = kit["d"] / f"{name}.toml"
    p.write_bytes(data)
    return str(p)


def _base(kit, **over):
    keys = {"image_size": 16, "images_per_split": 2, "splits": ["id"], "priors": [kit["good"]],
            "tasks": ["denoise"], "lams": [0.5], "solvers": ["zero-init"], "budget": 30, "mle_steps": 10}
    keys.update(over)
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items() if v is not None)


# (id, argv builder, a string the one line must contain). OUT is replaced by a fresh output dir.
CASES = [
    ("unknown-subcommand", lambda k: ["frobnicate"], "frobnicate"),
    ("unknown-grid-preset", lambda k: ["run", "--grid", "no-such-grid", "--out", "OUT"], "no-such-grid"),
    ("missing-grid-file", lambda k: ["run", "--grid", str(k["d"] / "nope.toml"), "--out", "OUT"], "nope.toml"),
    ("unknown-solver-filter", lambda k: ["run", "--grid", _grid(k, "f1"), "--solver", "nosuch-solver",
                                         "--out", "OUT"], "nosuch-solver"),
    ("non-numeric-lam-filter", lambda k: ["run", "--grid", _grid(k, "f2"), "--lam", "half", "--out", "OUT"],
     "half"),
    ("unknown-task-in-grid", lambda k: ["run", "--grid", _grid(k, "g1", tasks=["deblurr"]), "--out", "OUT"],
     "deblurr"),
    ("unknown-key-in-grid", lambda k: ["run", "--grid", _raw_grid(k, "g2", _base(k) + "bugdet = 3\n"),
                                       "--out", "OUT"], "bugdet"),
    ("wrong-type-in-grid", lambda k: ["run", "--grid", _raw_grid(k, "g3", _base(k, budget="lots")),
                                      "--out", "OUT"], "lots"),
    ("toml-syntax-error", lambda k: ["run", "--grid", _raw_grid(k, "g3b", _base(k) + "lams = [0.5,\n"),
                                     "--out", "OUT"], "g3b.toml"),
    ("negative-lambda", lambda k: ["run", "--grid", _grid(k, "g4", lams=[0.5, -1.0]), "--out", "OUT"], "-1"),
    ("zero-budget", lambda k: ["run", "--grid", _grid(k, "g5", budget=0, mle_steps=0), "--out", "OUT"], "budget"),
    ("empty-axis", lambda k: ["run", "--grid", _grid(k, "g6", tasks=[]), "--out", "OUT"], "tasks"),
    ("unknown-prior-name", lambda k: ["run", "--grid", _grid(k, "g7", priors=["realnvp-xxl"]), "--out", "OUT"],
     "realnvp-xxl"),
    ("images-per-split-too-large", lambda k: ["run", "--grid", _grid(k, "g8", images_per_split=100000),
                                              "--out", "OUT"], "100000"),
    ("missing-celeba-folder", lambda k: ["run", "--grid", _grid(k, "g9", dataset="celeba"), "--data-root",
                                         str(k["d"] / "no-celeba-here"), "--out", "OUT"], "no-celeba-here"),
    ("bad-solver-override", lambda k: ["run", "--grid", _grid(k, "g10", solvers=["aipo[nope=1]"]),
                                       "--out", "OUT"], "nope"),
    ("missing-checkpoint-in-grid", lambda k: ["run", "--grid", _grid(k, "g11", priors=[str(k["d"] / "gone.pt")]),
                                              "--out", "OUT"], "gone.pt"),
    ("garbage-checkpoint-in-grid", lambda k: ["run", "--grid", _grid(k, "g12", priors=[k["garbage"]]),
                                              "--out", "OUT"], "garbage.pt"),
    ("truncated-checkpoint-inspect", lambda k: ["inspect-prior", k["truncated"]], "truncated.pt"),
    ("mismatched-checkpoint-config", lambda k: ["inspect-prior", k["mismatched"]], "mismatched.pt"),
    ("mismatched-checkpoint-in-grid", lambda k: ["run", "--grid", _grid(k, "g13", priors=[k["mismatched"]]),
                                                 "--out", "OUT"], "mismatched.pt"),
    ("unwritable-output-dir", lambda k: ["run", "--grid", _grid(k, "g14"), "--out",
                                         str(k["a_file"] / "sub")], "a-file"),
    ("unknown-device", lambda k: ["run", "--grid", _grid(k, "g15"), "--device", "tpu", "--out", "OUT"], "tpu"),
    ("unknown-executor", lambda k: ["run", "--grid", _grid(k, "g16"), "--executor", "spark", "--out", "OUT"],
     "spark"),
    ("zero-workers", lambda k: ["run", "--grid", _grid(k, "g17"), "--workers", "0", "--out", "OUT"], "--workers"),
    ("words-for-workers", lambda k: ["run", "--grid", _grid(k, "g17d"), "--workers", "many", "--out", "OUT"],
     "many"),
    ("zero-threads", lambda k: ["run", "--grid", _grid(k, "g17e"), "--threads", "0", "--out", "OUT"], "--threads"),
    ("zero-workers-dask", lambda k: ["run", "--grid", _grid(k, "g17b"), "--executor", "dask", "--workers", "0",
                                     "--out", "OUT"], "--workers"),
    ("zero-slurm-time", lambda k: ["run", "--grid", _grid(k, "g17c"), "--executor", "slurm", "--slurm-cluster",
                                   "local", "--slurm-time", "0", "--out", "OUT"], "--slurm-time"),
    ("slurm-without-sbatch", lambda k: ["run", "--grid", _grid(k, "g18"), "--executor", "slurm", "--out", "OUT"],
     "sbatch"),
    ("missing-plugin", lambda k: ["run", "--grid", _grid(k, "g19"), "--plugin", "no_such_plugin_mod",
                                  "--out", "OUT"], "no_such_plugin_mod"),
    ("check-missing-reference", lambda k: ["check", str(k["d"]), "--reference", str(k["d"] / "no-ref")],
     "no-ref"),
    ("report-missing-dir", lambda k: ["report", str(k["d"] / "no-run-dir")], "no-run-dir"),
    ("perf-unknown-grid", lambda k: ["perf", "--grids", "smoke,nosuch"], "nosuch"),
    # bounds and checks against the image size, before any work (also under --dry-run)
    ("budget-1e19", lambda k: ["run", "--grid", _grid(k, "b1", budget=10 ** 19), "--out", "OUT"], "budget"),
    ("budget-1e12", lambda k: ["run", "--grid", _grid(k, "b2", budget=10 ** 12), "--out", "OUT"], "budget"),
    ("seed-1e30", lambda k: ["run", "--grid", _raw_grid(k, "b3", _base(k) + "seeds = [1000000000000000000000000000000]\n"),
                             "--out", "OUT"], "seeds"),
    ("image-size-100000", lambda k: ["run", "--grid", _grid(k, "b4", image_size=100000), "--out", "OUT"],
     "image_size"),
    ("negative-alpha", lambda k: ["run", "--grid", _grid(k, "b5", solvers=["aipo[alpha=-1.0]"]), "--out", "OUT"],
     "alpha"),
    ("negative-K", lambda k: ["run", "--grid", _grid(k, "b6", solvers=["aipo[K=-1]"]), "--out", "OUT"], "K"),
    ("cs-m-exceeds-n", lambda k: ["run", "--grid", _grid(k, "b7", tasks=["cs[m=300]"]), "--out", "OUT"], "m=300"),
    ("cs-m-exceeds-n-dry-run", lambda k: ["run", "--grid", _grid(k, "b7d", tasks=["cs[m=300]"]), "--dry-run",
                                          "--out", "OUT"], "m=300"),
    ("inpaint-block-5", lambda k: ["run", "--grid", _grid(k, "b8", tasks=["inpaint[block=5]"]), "--out", "OUT"],
     "block=5"),
    ("sigma-nan", lambda k: ["run", "--grid", _grid(k, "b9", tasks=["denoise[sigma=nan]"]), "--out", "OUT"],
     "sigma"),
    ("sigma-zero", lambda k: ["run", "--grid", _grid(k, "b9z", tasks=["cs[sigma=0.0]"]), "--out", "OUT"], "sigma"),
    ("workers-1000", lambda k: ["run", "--grid", _grid(k, "b10"), "--workers", "1000", "--out", "OUT"], "1000"),
    ("unsafe-grid-name", lambda k: ["run", "--grid", _raw_grid(k, "b11", 'name = "../../../tmp/x"\n' + _base(k)),
                                    "--out", "OUT"], "../../../tmp/x"),
    ("plugin-syntax-error", lambda k: ["run", "--grid", _grid(k, "b12"), "--plugin", "broken_plugin_mod",
                                       "--out", "OUT"], "SyntaxError"),
    ("run-json-not-utf8", lambda k: ["run", "--grid", _grid(k, "b13"), "--out", str(_dir_with(k, "j1", b"\xff\xfe{"))],
     "run.json"),
    ("run-json-list", lambda k: ["run", "--grid", _grid(k, "b14"), "--out", str(_dir_with(k, "j2", b"[1, 2]"))],
     "run.json"),
    ("checkpoint-huge-hidden", lambda k: ["inspect-prior", k["huge"]], "hidden"),
    ("checkpoint-huge-hidden-in-grid", lambda k: ["run", "--grid", _grid(k, "b15", priors=[k["huge"]]),
                                                  "--out", "OUT"], "hidden"),
    ("image-14000-squared", lambda k: ["run", "--grid", _grid(k, "b16", ood_dataset="image-folder",
                                                            splits=["ood"]), "--ood-root", k["big_folder"],
                                       "--out", "OUT"], "big.png"),
    ("float-tiff-0-255", lambda k: ["run", "--grid", _grid(k, "b17", ood_dataset="image-folder", splits=["ood"]),
                                    "--ood-root", k["float_folder"], "--out", "OUT"], "float pixels must lie in [0, 1]"),
    ("train-prior-lr-nan", lambda k: ["train-prior", "--prior", "glow", "--lr", "nan", "--out", str(k["d"])],
     "--lr"),
    ("train-prior-zero-images", lambda k: ["train-prior", "--prior", "glow", "--train-images", "0",
                                           "--out", str(k["d"])], "--train-images"),
    ("non-run-output-dir", lambda k: ["run", "--grid", _grid(k, "b18"), "--out", str(_dir_with(k, "j3", None))],
     "not a run directory"),
    # each named, before any work and before the output folder exists
    ("cs-m-nan", lambda k: ["run", "--grid", _grid(k, "c1", tasks=["cs[m=nan]"]), "--out", "OUT"], "got nan"),
    ("aipo-K-1e30", lambda k: ["run", "--grid", _grid(k, "c2", solvers=["aipo[K=1e30]"]), "--out", "OUT"],
     "'K'"),
    ("grid-not-utf8", lambda k: ["run", "--grid", _bytes_grid(k, "c3", b'name = "\xff\xfe"\n' + _base(k).encode()),
                                 "--out", "OUT"], "c3.toml"),
    ("lam-1e308", lambda k: ["run", "--grid", _grid(k, "c4", lams=[1e308]), "--out", "OUT"], "1e+308"),
    ("threads-1000000", lambda k: ["run", "--grid", _grid(k, "c5"), "--threads", "1000000", "--out", "OUT"],
     "--threads 1000000"),
    ("dead-dask-scheduler", lambda k: ["run", "--grid", _grid(k, "c6"), "--executor", "dask", "--scheduler",
                                       "tcp://127.0.0.1:9", "--out", "OUT"], "tcp://127.0.0.1:9"),
    ("check-max-lines-negative", lambda k: ["check", str(k["d"]), "--reference", str(k["d"]), "--max-lines", "-1"],
     "'-1'"),
    ("check-tolerance-minus-3se", lambda k: ["check", str(k["d"]), "--reference", str(k["d"]), "--fail-map-loss",
                                             "-3se"], "'-3se'"),
    ("tune-factors-minus-1-0", lambda k: ["tune", "--grid", _grid(k, "c7"), "--factors", "-1,0", "--out",
                                          "OUT/tuned.json"], "'-1,0'"),
    ("checkpoint-nan-weights-inspect", lambda k: ["inspect-prior", k["nan_weights"]], "non-finite"),
    ("checkpoint-nan-weights-in-grid", lambda k: ["run", "--grid", _grid(k, "c9", priors=[k["nan_weights"]]),
                                                  "--out", "OUT"], "non-finite"),
    ("train-prior-name-escapes-out", lambda k: ["train-prior", "--prior", "realnvp", "--preset", "xs", "--steps", "1",
                                                "--name", "../escaped", "--out", "OUT"], "'../escaped'"),
    ("report-out-in-missing-folder", lambda k: ["report", str(k["d"]), "--out", "OUT/LEADERBOARD.md"], "does not exist"),
    ("ansi-escapes-in-a-message", lambda k: ["run", "--grid", _grid(k, "c8"), "--plugin", "ansi_plugin_mod",
                                             "--out", "OUT"], "boom second line"),
]


def _dir_with(kit, name, run_json: bytes | None):
    """An output folder holding a run.json with these bytes (or, with None, an unrelated file)."""
    d = kit["d"] / f"outdir-{name}"
    d.mkdir(exist_ok=True)
    if run_json is None:
        (d / "holiday.jpg").write_bytes(b"x")
    else:
        (d / "run.json").write_bytes(run_json)
    return d
SUBPROCESS = {"unknown-subcommand", "garbage-checkpoint-in-grid", "unknown-key-in-grid"}


def _check_out(out: Path):
    """Nothing half-written: the output dir is absent, or holds no result part files."""
    if out.exists():
        assert not list((out / store.ROWS).glob("*.parquet")) if (out / store.ROWS).exists() else True
        assert not list(out.rglob("*.parquet")) and not list(out.rglob("*.npz"))


@pytest.mark.parametrize("name,argv,needle", CASES, ids=[c.values[0] if hasattr(c, "values") else c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(name, argv, needle, kit, tmp_path, capsys, monkeypatch):
    if name == "slurm-without-sbatch" and __import__("shutil").which("sbatch"):
        pytest.skip("sbatch is installed here")
    out = tmp_path / "out"
    args = [str(out) + a[3:] if a.startswith("OUT") else a for a in argv(kit)]
    if name in ("plugin-syntax-error", "ansi-escapes-in-a-message"):
        monkeypatch.syspath_prepend(str(kit["d"] / "plugins"))
    if name in SUBPROCESS:
        r = run_bench(*args)
        code, err, stdout = r.returncode, r.stderr, r.stdout
    else:
        try:
            code = cli.main(args)
        except SystemExit as e:  # argparse errors
            code = e.code
        captured = capsys.readouterr()
        err, stdout = captured.err, captured.out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err, stdout)
    assert "Traceback" not in err + stdout
    assert len(lines) == 1, err
    assert "error" in lines[0] and needle in lines[0], lines[0]
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", err), repr(err)   # no escapes, bells, CRs, tabs
    assert not out.exists(), sorted(p.name for p in out.iterdir())   # nothing created, not even the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "written beside the output folder"
    if os.path.isdir(out):
        assert not (out / store.ROWS).exists() or not any((out / store.ROWS).iterdir())
