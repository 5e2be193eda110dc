"""A new dataset and a new executor are one plugin file each: written into a temp folder, loaded with ``--plugin``,
and used by the CLI next to shipped ones — with no edit anywhere else.

``stripes``: synthetic grey sinusoidal stripes drawn from their index alone (train/val/test splits, a declared
``count`` option); ``serial``: runs the units in this process, one after another, in the order its own flag
``--serial-order`` says. The same grid under ``serial`` (reversed) and ``local`` writes the same rows.
"""
from __future__ import annotations

import importlib
import os
import sys
import textwrap

import pytest

from bench.core.errors import UserError
from bench.store.parts import read_run
from kit.grids import assert_same_rows, bench_env, comparable, run_bench, write_grid, write_plugin

DATASET = textwrap.dedent('''
    """stripes: a dataset declared in full in one file."""
    import math

    import torch

    from bench.datasets.base import DATASETS, Dataset, ImageSet
    from bench.core.registry import Param


    @DATASETS.register("stripes")
    class Stripes(Dataset):
        """Image k of a split: 0.5 + 0.4 sin(2 pi f (x cos a + y sin a)) with its angle a and frequency f drawn
        from k and the split (no files, no randomness)."""

        splits = ("train", "val", "test")
        description = "synthetic grey stripes, angle and frequency from the image index"
        options = {"count": Param(int, 6, range=">=1", doc="images per split")}

        def load(self, split="test", size=16, root=None, count=6):
            first = {"train": 0, "val": 1000, "test": 2000}[split]
            y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
            images, ids = [], []
            for k in range(first, first + count):
                a, f = 0.7 * k, 1 + k % 5
                images.append(0.5 + 0.4 * torch.sin(2 * math.pi * f * (x * math.cos(a) + y * math.sin(a))))
                ids.append(f"stripes/{split}-{k}")
            return ImageSet(torch.stack(images)[:, None].float(), ids, "stripes", split)
''')

EXECUTOR = textwrap.dedent('''
    """serial: an executor declared in full in one file (its own flag included)."""
    from bench.run.executors import EXECUTORS, Executor, init_worker


    @EXECUTORS.register("serial")
    class SerialExecutor(Executor):
        """Every unit in this process, one after another, in the given or the reversed order."""

        def __init__(self, order="given", **kw):
            super().__init__(**kw)
            self.order = order

        @classmethod
        def add_arguments(cls, parser):
            g = parser.add_argument_group("serial executor (--executor serial)")
            g.add_argument("--serial-order", choices=("given", "reversed"), default="given",
                           help="the order the units run in")

        @classmethod
        def from_args(cls, args, imports=()):
            return cls(order=args.serial_order, imports=imports, threads=args.threads)

        def map(self, fn, specs, out_dir):
            import torch

            specs = list(specs)[::-1] if self.order == "reversed" else list(specs)
            before = torch.get_num_threads()
            init_worker(self.threads, self.imports)
            try:
                for spec in specs:
                    try:
                        yield spec, fn(spec, out_dir)
                    except Exception as e:  # noqa: BLE001 -- becomes error rows
                        yield spec, e
            finally:
                torch.set_num_threads(before)
''')


@pytest.fixture
def plugins(tmp_path):
    folder = tmp_path / "plugins"
    names = [write_plugin(folder, "stripes_data", DATASET), write_plugin(folder, "serial_executor", EXECUTOR)]
    env = bench_env(PYTHONPATH=os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    return folder, names, env


def test_plugin_dataset_and_executor_run_from_the_cli(plugins, tmp_path):
    _, (data, executor), env = plugins
    r = run_bench("run", "--help", "--plugin", executor, env=env)
    assert r.returncode == 0 and "serial" in r.stdout and "--serial-order" in r.stdout, r.stderr[-2000:]
    grid = write_grid(tmp_path / "stripes.toml", dataset="stripes", priors=["realnvp-xs"], tasks=["denoise"],
                      lams=[0.5], solvers=["zero-init", "lasso-dct"], budget=12, mle_steps=4)
    runs = {}
    for label, flags in (("serial", ["--executor", "serial", "--serial-order", "reversed"]),
                         ("local", ["--executor", "local", "--workers", "1"])):
        out = tmp_path / label
        r = run_bench("run", "--grid", grid, "--plugin", data, "--plugin", executor, *flags, "--out", out, "-q",
                      env=env)
        assert r.returncode == 0 and " 0 failures" in r.stdout, r.stderr[-3000:]
        runs[label] = comparable(read_run(out))
    rows = runs["serial"]
    assert len(rows) == 4 and (rows["status"] == "ok").all()
    assert sorted(set(rows["image_id"])) == ["stripes/test-2000", "stripes/test-2001"]
    assert_same_rows(rows, runs["local"])


def test_plugin_dataset_loads_with_checked_options(plugins, monkeypatch):
    """In process: the dataset loads by spec with its declared option, which is checked like any parameter."""
    from bench.datasets.base import DATASETS, load_dataset

    folder, (data, _), _ = plugins
    monkeypatch.syspath_prepend(str(folder))
    DATASETS.names()                               # discover the shipped datasets first
    try:
        cls = importlib.import_module(data).Stripes   # registers stripes at import, which this test holds only
    finally:                                          # inside the with block below
        DATASETS.unregister("stripes")
        sys.modules.pop(data, None)
    with DATASETS.temporarily("stripes", cls):
        s = load_dataset("stripes[count=3]", "val", 8)
        assert s.images.shape == (3, 1, 8, 8) and 0 <= float(s.images.min()) and float(s.images.max()) <= 1
        assert s.ids == ["stripes/val-1000", "stripes/val-1001", "stripes/val-1002"]
        with pytest.raises(UserError, match=r"parameter 'count' of dataset 'stripes' must be >= 1, got 0"):
            load_dataset("stripes[count=0]", "test", 8)
    assert "stripes" not in DATASETS.names()
