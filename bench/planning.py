"""Planning: a validated grid → frozen :class:`UnitSpec` work units, after checking everything it needs from outside.

A *unit* is one solver over all images of one split × the λ values of one (task, prior, split, seed, budget). Its
spec is plain data (names and numbers, picklable), so any executor can ship it to another process or machine;
:func:`bench.unit.execute_unit` runs it. λ values of several grid blocks for the same unit are merged.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UserError
from bench.grid import Domain, Grid
from bench.grid_fields import is_prior_path
from bench.identity import cell_ids, unit_id
from bench.loading import get_images, get_prior
from bench.protocols import DEFAULT as DEFAULT_PROTOCOL
from bench.registry import protocol_values


@dataclass(frozen=True, eq=False)
class UnitSpec:
    """One work unit. Identity fields (:data:`bench.identity.IDENTITY_KEYS`) decide ``unit_id`` and the cell ids;
    ``prior`` (the resolved checkpoint path or shipped name), ``data_root``, ``device``, ``tf32``, ``deterministic``,
    ``provenance`` and
    ``imports`` (plugin modules the executing process imports first) say where and how to run it. Frozen; its dicts
    are not to be changed either (``unit_id`` is computed once). Compared and hashed by identity."""

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
    lams: tuple                   # sorted floats
    solver: str                   # solver spec as in the grid, e.g. "aipo[alpha=0.01]"
    solver_overrides: dict        # grid overrides + tuned values, what the solver is built with
    solver_params: dict           # every resolved parameter (part of the identity)
    tuned: bool
    seed: int
    budget: int                   # prior passes per row, MLE stage included
    mle_steps: int
    protocol: str = "robust"      # bench/protocols.py
    device: str = "cpu"
    tf32: bool = False            # TF32 allowed on CUDA (bench.device.numerics_mode); not part of the identity
    deterministic: bool = False   # deterministic algorithms (bench.device.numerics_mode); not part of the identity
    provenance: dict = field(default_factory=dict)
    imports: tuple = ()
    isolate: bool = True          # solve in a solver process behind the counted oracle (bench/isolate.py)
    timeout_s: float | None = None   # wall-time limit of the unit's solve (None: bench.unit.default_timeout_s)
    memory_mb: int | None = None  # memory limit of its solver process (None: bench.unit.DEFAULT_MEMORY_MB)
    unit_id: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "unit_id", unit_id(self))

    @property
    def rows(self) -> int:
        return len(self.image_ids) * len(self.lams)

    def cell_ids(self) -> list[str]:
        return cell_ids(self)

    def with_lams(self, lams) -> "UnitSpec":
        """The same unit restricted to ``lams`` (a new unit id; cell ids unchanged)."""
        return dataclasses.replace(self, lams=tuple(float(x) for x in lams))


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


def image_channels(domain: Domain, split: str) -> tuple:
    ds, root = domain.dataset_for(split)
    return tuple(get_images(ds, "test", domain.image_size, root).images.shape[1:])


def lookup_tuned(tuned: dict | None, solver: str, task: str, prior: str) -> dict:
    if not tuned:
        return {}
    return dict(tuned.get(solver, {}).get(task, {}).get(prior, {}))


def make_unit(*, task: str, prior_spec: str, prior, dataset: str, dataset_split: str, split: str, data_root,
              image_size: int, image_ids, lams, solver: str, tuned_params: dict, seed: int, budget: int,
              mle_steps: int, device: str, provenance: dict, imports=(), protocol: str = DEFAULT_PROTOCOL,
              tf32: bool = False, deterministic: bool = False) -> UnitSpec:
    """A unit spec with the task's and solver's parameters resolved (a bad parameter is a UserError here)."""
    from bench.registry import parse_spec
    from bench.solvers.base import SOLVERS
    from bench.tasks import make_task

    t = make_task(task)
    name, overrides = parse_spec(solver)
    cls = SOLVERS.get(name)
    overrides = {**protocol_values(cls.parameters, protocol), **overrides, **tuned_params}
    inst = cls(**overrides)
    return UnitSpec(
        task=t.spec, task_params=dict(t.params), prior=prior_spec, prior_name=prior.name, prior_sha256=prior.sha256,
        dataset=dataset, dataset_split=dataset_split, split=split, data_root=data_root, image_size=image_size,
        image_ids=tuple(image_ids), lams=tuple(sorted(float(x) for x in lams)), solver=solver,
        solver_overrides=overrides, solver_params=dict(inst.params), tuned=bool(tuned_params), seed=int(seed),
        budget=int(budget), mle_steps=int(mle_steps), protocol=protocol, device=str(device), provenance=dict(provenance),
        imports=tuple(imports), tf32=bool(tf32), deterministic=bool(deterministic))


def plan_units(grid: Grid, *, device: str = "cpu", tuned: dict | None = None, prior_dir: str | None = None,
               provenance: dict | None = None, imports=(), tf32: bool = False,
               deterministic: bool = False, isolate: bool = True) -> list[UnitSpec]:
    """Expand a grid into unit specs: one per (split, prior, task, seed, solver, budget), λ merged over blocks.
    ``tf32`` and ``deterministic`` say how every unit computes (:func:`bench.device.numerics_mode`); ``isolate``
    whether it solves in a solver process (:mod:`bench.isolate`)."""
    from bench.tasks import make_task

    provenance = provenance or {}
    priors, images, domains, keys = {}, {}, {}, {}
    for b in grid.blocks:
        dom = grid.domain(b)
        for split in b.splits:
            where = (dom.dataset_for(split), dom.image_size, dom.images_per_split[split], split)
            if where not in images:
                domains[where] = dom
                images[where] = split_images(dom, split)
                for t in b.tasks:
                    make_task(t).check_shape(image_channels(dom, split))
            shape = image_channels(dom, split)
            for spec in b.priors:
                if spec not in priors:
                    priors[spec] = get_prior(resolve_prior(spec, prior_dir), "cpu")
                if priors[spec].image_shape != shape:
                    raise UserError(f"prior {spec!r} models images of shape {priors[spec].image_shape} but grid "
                                    f"{grid.name!r} gives {shape} (image_size {dom.image_size}, split {split!r}, "
                                    f"block {b.label!r})")
                for task in b.tasks:
                    for seed in b.seeds:
                        for solver in b.solvers:
                            for budget in grid.budgets:   # each budget is its own cell (AIPO's schedule uses it)
                                keys.setdefault((where, spec, task, seed, solver, budget), set()).update(b.lams)
    units = []
    for (where, prior, task, seed, solver, budget), lams in keys.items():
        (ds, root), dom, split = where[0], domains[where], where[-1]
        units.append(make_unit(
            task=task, prior_spec=resolve_prior(prior, prior_dir), prior=priors[prior], dataset=ds,
            dataset_split="test", split=split, data_root=root, image_size=dom.image_size,
            image_ids=images[where], lams=lams, solver=solver,
            tuned_params=lookup_tuned(tuned, solver, task, prior), seed=seed, budget=budget,
            mle_steps=grid.mle_steps, device=device, provenance=provenance, imports=imports, protocol=grid.protocol,
            tf32=tf32, deterministic=deterministic))
    return [dataclasses.replace(u, isolate=bool(isolate), timeout_s=grid.unit_timeout_s,
                                memory_mb=grid.unit_memory_mb) for u in units]
