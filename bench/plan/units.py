"""Planning: a validated grid → frozen :class:`UnitSpec` work units, after checking everything it needs from outside.

A *unit* is one solver over all images of one split × the λ values of one (task, prior, split, seed, budget). Its
spec is plain data (names and numbers, picklable), so any executor can ship it to another process or machine;
:func:`bench.run.unit.execute_unit` runs it. λ values of several grid blocks for the same unit are merged.

``bench run`` and ``bench tune`` plan the same way: :func:`start_run` (plugins, preflight, provenance: a
:class:`RunContext`), :func:`plan_cells` (the one walk over the grid's blocks, on the test images of every split or,
for tuning, on the validation images), :func:`make_unit` (one :class:`UnitPlan` with resolved solver parameters,
tuned ones included). :func:`plan_units` is the run's plan: every unit of the grid.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.errors import UserError
from bench.core.identity import cell_ids, unit_id
from bench.core.protocols import DEFAULT as DEFAULT_PROTOCOL
from bench.core.registry import protocol_values
from bench.plan.grid import Domain, Grid
from bench.plan.grid_fields import is_prior_path
from bench.plan.loading import get_images, get_prior


@dataclass(frozen=True, eq=False)
class RunContext:
    """How and where a run's units compute, none of it part of their identity: the device, TF32 allowed, deterministic
    algorithms (:func:`bench.core.device.numerics_mode`), whether each unit solves in a solver process
    (:mod:`bench.run.isolate`), the unit limits (``None``: :func:`bench.run.unit.default_timeout_s`,
    :data:`bench.run.unit.DEFAULT_MEMORY_MB`), the folder relative checkpoint paths resolve against, the plugin modules
    an executing process imports first and the provenance every row records
    (:func:`bench.core.provenance.row_provenance`)."""

    device: str = "cpu"
    tf32: bool = False
    deterministic: bool = False
    isolate: bool = True
    timeout_s: float | None = None
    memory_mb: int | None = None
    prior_dir: str | None = None
    imports: tuple = ()
    provenance: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class UnitSpec:
    """One work unit. Identity fields (:data:`bench.core.schema.IDENTITY_KEYS`) decide ``unit_id`` and the cell ids;
    ``prior`` (the resolved checkpoint path or shipped name) and ``data_root`` say where its inputs are, ``run`` how
    it computes. Frozen; its dicts are not to be changed either (``unit_id`` is computed once). Compared and hashed by
    identity. λ values are floats from here on."""

    task: str                     # task spec, e.g. "cs[m=0.1628]"
    task_params: dict
    prior: str
    prior_name: str
    prior_sha256: str
    dataset: str
    dataset_split: str
    split: str
    data_root: str | None
    image_size: int
    image_ids: tuple
    lams: tuple                   # floats, sorted by make_unit
    solver: str                   # solver spec as in the grid, e.g. "aipo[alpha=0.01]"
    solver_overrides: dict        # grid overrides + tuned values, what the solver is built with
    solver_params: dict           # every resolved parameter (part of the identity)
    tuned: bool
    seed: int
    budget: int                   # prior passes per row, MLE stage included
    mle_steps: int
    protocol: str = DEFAULT_PROTOCOL   # bench/core/protocols.py
    run: RunContext = field(default_factory=RunContext)
    unit_id: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "lams", tuple(float(x) for x in self.lams))
        object.__setattr__(self, "unit_id", unit_id(self))

    @property
    def device(self) -> str:
        """The device it computes on (``run.device``; executors place units by it)."""
        return self.run.device

    @property
    def rows(self) -> int:
        return len(self.image_ids) * len(self.lams)

    def cell_ids(self) -> list[str]:
        return cell_ids(self)

    def with_lams(self, lams) -> "UnitSpec":
        """The same unit restricted to ``lams`` (a new unit id; cell ids unchanged)."""
        return dataclasses.replace(self, lams=tuple(lams))


def resolve_prior(spec: str, prior_dir: str | None) -> str:
    """Shipped names pass through; relative checkpoint paths resolve against ``prior_dir`` (default: cwd)."""
    if not is_prior_path(spec):
        return spec
    p = Path(spec).expanduser()
    if not p.is_absolute():
        p = Path(prior_dir or ".") / p
    return str(p.resolve())


def preflight(grid: Grid, prior_dir: str | None = None) -> None:
    """Everything a grid needs from outside (data folders, checkpoint files), checked at once: one UserError that
    lists what is missing and how to get it."""
    from bench.datasets.base import DATASETS

    problems = []
    for b in grid.blocks:
        for split in b.splits:
            ds, root = grid.dataset_for(split, b)
            cls = DATASETS.get(ds)
            flag = "--data-root" if split == "id" else "--ood-root"
            if cls.needs_root and not root:
                msg = f"{flag} (dataset {ds!r} for split {split!r} reads images from a folder)"
            elif root and not Path(root).expanduser().is_dir():
                msg = f"{flag} {root!r} is not a folder"
            else:
                continue
            if msg not in problems:
                problems.append(msg)
    missing = []
    for spec in grid.values("priors"):
        if is_prior_path(spec) and not Path(resolve_prior(spec, prior_dir)).is_file():
            recipe = grid.prior_recipes.get(spec)
            missing.append(f"{spec}" + (f" (make it with: {recipe})" if recipe else ""))
    if missing:
        where = (f" under --prior-dir {prior_dir}" if prior_dir
                 else " (relative to the current directory or --prior-dir)")
        problems.append(f"prior checkpoint(s){where}: " + ", ".join(missing))
    if problems:
        raise UserError(f"grid {grid.name!r} cannot start, missing: " + "; ".join(problems))


def split_images(domain: Domain, split: str) -> list[str]:
    """Image ids of a split of ``domain`` (first ``images_per_split`` of the dataset's test split, id order)."""
    ds, root = domain.dataset_for(split)
    iset = get_images(ds, "test", domain.image_size, root)
    k = domain.images_per_split[split]
    if k is not None and k > len(iset) and not iset.missing:
        raise UserError(f"images_per_split = {k} exceeds the {len(iset)} images of {ds}/test (split {split!r}); "
                        f"use at most {len(iset)} or \"all\"")
    iset.require(k)
    return list(iset.ids if k is None else iset.ids[:k])


def lookup_tuned(tuned: dict | None, solver: str, task: str, prior: str) -> dict:
    if not tuned:
        return {}
    return dict(tuned.get(solver, {}).get(task, {}).get(prior, {}))


def start_run(grid: Grid, *, label: str | None = None, device: str = "cpu", tf32: bool = False,
              deterministic: bool = False, isolate: bool = True, prior_dir: str | None = None,
              imports=()) -> tuple[RunContext, dict]:
    """What ``run`` and ``tune`` do before planning: import the plugin modules, check everything the grid needs from
    outside (:func:`preflight`), stamp provenance (rows record ``label`` as the grid name, default the grid's). Returns
    the :class:`RunContext` and the facts run.json and tuned files record: ``git_commit``, ``git_dirty``,
    ``versions``, ``started_at``."""
    from bench.core.provenance import git_commit, now_iso, row_provenance, versions

    for mod in imports:
        importlib.import_module(mod)
    preflight(grid, prior_dir)
    commit, dirty = git_commit()
    facts = {"git_commit": commit, "git_dirty": dirty, "versions": versions(), "started_at": now_iso()}
    provenance = row_provenance(commit, facts["versions"], facts["started_at"], label or grid.name, grid.hash)
    return RunContext(device=str(device), tf32=bool(tf32), deterministic=bool(deterministic), isolate=bool(isolate),
                      timeout_s=grid.unit_timeout_s, memory_mb=grid.unit_memory_mb, prior_dir=prior_dir,
                      imports=tuple(imports), provenance=provenance), facts


@dataclass(frozen=True)
class Source:
    """Where a unit's images come from: a dataset's split (``dataset_split``), labelled ``split`` in the rows."""
    dataset: str
    dataset_split: str
    split: str
    data_root: str | None
    image_size: int
    image_ids: tuple


@dataclass(frozen=True)
class UnitPlan:
    """A unit before its solver parameters are resolved: images, prior (checkpoint path, name, sha256), task, seed,
    solver spec, budget and the λ values merged over the grid's blocks."""
    source: Source
    prior_spec: str               # as the grid names it (the key of tuned files)
    prior: str                    # resolved (bench.plan.units.resolve_prior)
    prior_name: str
    prior_sha256: str
    task: str
    seed: int
    solver: str
    budget: int
    lams: tuple


def validation_source(grid: Grid, n_images: int) -> Source:
    """The first ``n_images`` of the ``val`` split of the grid's main dataset: what ``bench tune`` tunes on."""
    from bench.datasets.base import DATASETS

    ds, root = grid.dataset, grid.data_root
    if "val" not in DATASETS.get(ds).splits:
        raise UserError(f"dataset {ds!r} has no 'val' split to tune on (splits: {', '.join(DATASETS.get(ds).splits)})")
    iset = get_images(ds, "val", grid.image_size, root)
    if n_images > len(iset) and not iset.missing:
        raise UserError(f"--images {n_images} exceeds the {len(iset)} images of {ds}/val")
    iset.require(n_images)
    return Source(ds, "val", "val", root, grid.image_size, tuple(iset.ids[:n_images]))


def plan_cells(grid: Grid, ctx: RunContext, validation: int | None = None) -> list[UnitPlan]:
    """The grid's units before parameter resolution: one per (split, prior, task, seed, solver, budget), λ merged over
    blocks, after checking that tasks and priors fit the images. ``validation``: plan ``bench tune``'s units instead,
    on that many validation images (:func:`validation_source`) of the main domain's blocks, at the first seed and
    the grid's largest budget."""
    from bench.tasks import make_task

    priors, sources, keys = {}, {}, {}
    val = validation_source(grid, validation) if validation is not None else None
    for b in grid.blocks:
        if val is not None and b.domain:   # tuning reads the main domain's validation images only
            continue
        dom = grid.domain(b)
        for split in (b.splits if val is None else [val.split]):
            if val is None:   # the split's dataset, read from its test split
                ds, root = dom.dataset_for(split)
                where = ((ds, root), dom.image_size, dom.images_per_split[split], split)
            else:
                where = val.split
            if where not in sources:
                sources[where] = val or Source(ds, "test", split, root, dom.image_size, tuple(split_images(dom, split)))
                for t in b.tasks:
                    make_task(t).check_shape(_channels(sources[where]))
            shape = _channels(sources[where])
            for spec in b.priors:
                if spec not in priors:
                    priors[spec] = get_prior(resolve_prior(spec, ctx.prior_dir), "cpu")
                if priors[spec].image_shape != shape:
                    raise UserError(f"prior {spec!r} models images of shape {priors[spec].image_shape} but grid "
                                    f"{grid.name!r} gives {shape} (image_size {dom.image_size}, split {split!r}, "
                                    f"block {b.label!r})")
                for task in b.tasks:
                    for seed in (b.seeds if val is None else grid.main.seeds[:1]):
                        for solver in b.solvers:
                            # each budget is its own cell (AIPO's schedule uses it); tuning uses the largest
                            for budget in (grid.budgets if val is None else (grid.budget,)):
                                keys.setdefault((where, spec, task, seed, solver, budget), set()).update(b.lams)
    return [UnitPlan(sources[where], spec, resolve_prior(spec, ctx.prior_dir), priors[spec].name,
                     priors[spec].sha256, task, seed, solver, budget, tuple(sorted(lams)))
            for (where, spec, task, seed, solver, budget), lams in keys.items()]


def _channels(source: Source) -> tuple:
    """(C, H, W) of a source's images."""
    return tuple(get_images(source.dataset, source.dataset_split, source.image_size, source.data_root)
                 .images.shape[1:])


def make_unit(grid: Grid, ctx: RunContext, plan: UnitPlan, tuned_params: dict | None = None) -> UnitSpec:
    """The unit spec of ``plan`` with the task's and solver's parameters resolved under the grid's protocol and
    ``tuned_params`` (a bad parameter is a UserError here)."""
    from bench.core.registry import parse_spec
    from bench.solvers.base import SOLVERS
    from bench.tasks import make_task

    t = make_task(plan.task)
    name, overrides = parse_spec(plan.solver)
    cls = SOLVERS.get(name)
    overrides = {**protocol_values(cls.parameters, grid.protocol), **overrides, **(tuned_params or {})}
    inst = cls(**overrides)
    src = plan.source
    return UnitSpec(
        task=t.spec, task_params=dict(t.params), prior=plan.prior, prior_name=plan.prior_name,
        prior_sha256=plan.prior_sha256, dataset=src.dataset, dataset_split=src.dataset_split, split=src.split,
        data_root=src.data_root, image_size=src.image_size, image_ids=src.image_ids, lams=plan.lams,
        solver=plan.solver, solver_overrides=overrides, solver_params=dict(inst.params), tuned=bool(tuned_params),
        seed=int(plan.seed), budget=int(plan.budget), mle_steps=int(grid.mle_steps), protocol=grid.protocol, run=ctx)


def plan_units(grid: Grid, ctx: RunContext | None = None, tuned: dict | None = None) -> list[UnitSpec]:
    """Every unit of a grid (:func:`plan_cells`), with the tuned parameters of ``tuned`` (solver → task → prior →
    {param: value}) applied; ``ctx`` says how they compute (default: on the CPU, isolated, no provenance)."""
    ctx = ctx or RunContext(timeout_s=grid.unit_timeout_s, memory_mb=grid.unit_memory_mb)
    return [make_unit(grid, ctx, p, lookup_tuned(tuned, p.solver, p.task, p.prior_spec))
            for p in plan_cells(grid, ctx)]
