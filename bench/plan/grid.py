"""Benchmark grids: a TOML file of axes (tasks × priors × λ × splits × solvers × seeds) plus the data and budget.

A grid is data. ``--grid`` takes a preset name (``bench/grids/<name>.toml``, listed by ``python -m bench list grids``)
or a path to a ``.toml`` file. Keys (all validated before any work; an unknown key, an unknown name, λ < 0, an
empty axis, a bad type... raises one :class:`~bench.core.errors.UserError` naming the field)::

    name             = "smoke"              # default: the file's stem
    description      = "..."                # one line, shown by `list grids`
    dataset          = "lfw-faces"          # the in-distribution dataset; split "id" = its `test` split
    ood_dataset      = "ood"                # split "ood" = this dataset's `test` split
    data_root        = "/data/celeba"       # optional (datasets that read a folder); CLI --data-root overrides
    ood_data_root    = "/data/ood"          # optional (default: data_root if both splits use one dataset);
                                            # CLI --ood-root overrides
    image_size       = 16
    images_per_split = 8                    # first k images of each split (id order), "all", or per split:
                                            # {id = 200, ood = "all"}
    splits           = ["id", "ood"]
    priors           = ["realnvp-s", "glow-s"]     # shipped names or checkpoint paths (*.pt)
    tasks            = ["denoise", "cs[m=0.3255]", "cs[m=0.1628]", "inpaint"]
    lams             = [0.3, 0.5, 1.0, 1.5, 2.0]
    solvers          = "all"                # or specs: ["aipo", "aipo[alpha=0.01]", "lasso-dct"]
    seeds            = [0]
    budget           = 600                  # prior passes per image, the MLE stage included (README contract 2)
    mle_steps        = 100                  # passes of the MLE stage x*(0) (AIPO §4.1: 500 at paper scale)
    protocol         = "robust"             # how solvers step and start (bench/core/protocols.py): robust | paper

    [prior_recipes]                         # optional: checkpoint path -> command line that makes it
    "checkpoints/glow-paper.pt" = "python -m bench train-prior ..."

    [[extra]]                               # optional extra blocks; each overrides some axes of the main block
    label   = "cs-sweep"
    tasks   = ["cs[m=0.02]", "cs[m=0.05]"]
    solvers = ["aipo", "latent-lbfgs", "lasso-dct", "lasso-wvt"]
    lams    = [0.5]

    [[extra]]                               # a block may also bring its own domain (dataset, ood_dataset,
    label      = "sharp"                    # image_size, images_per_split): one grid, two domains
    dataset    = "fashion-mnist"
    ood_dataset = "patches"
    image_size = 28
    priors     = ["realnvp-m", "glow-m"]

The cells of a grid are the union over its blocks (main block + extras) of tasks × priors × splits × λ × solvers ×
seeds; a cell in two blocks is run once. Data roots (``data_root``, ``ood_data_root``, ``--data-root``,
``--ood-root``) belong to the main block's datasets; a block with its own dataset reads it from the dataset's default
place. Relative prior paths resolve against ``--prior-dir`` (default: the current
directory). Filters (``--task --prior --solver --lam --split``) narrow every block (:mod:`bench.plan.filters`).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.core.errors import UserError
from bench.core.identity import sha256_json
from bench.core.protocols import DEFAULT as DEFAULT_PROTOCOL
from bench.core.protocols import check_protocol
from bench.plan.grid_fields import (MAX_BUDGET, MAX_IMAGE_SIZE, NAME, SPLITS, _dataset, _fail, _images_count, _int,
                                    _lam, _list, _prior, _seed, _solver, _split, _str, _task, all_solvers)

PRESET_DIR = Path(__file__).resolve().parents[1] / "grids"
AXES = ("priors", "tasks", "lams", "solvers", "splits", "seeds")
TOP_KEYS = ("name", "description", "dataset", "ood_dataset", "data_root", "ood_data_root", "image_size",
            "images_per_split", "splits", "priors", "tasks", "lams", "solvers", "seeds", "budget", "mle_steps",
            "protocol", "prior_recipes", "extra", "unit_timeout_s", "unit_memory_mb")
REQUIRED = ("priors", "tasks", "lams", "solvers", "budget", "mle_steps")
DOMAIN_KEYS = ("dataset", "ood_dataset", "image_size", "images_per_split")
EXTRA_KEYS = ("label",) + AXES + DOMAIN_KEYS


@dataclass(frozen=True)
class Block:
    """One block of axes. ``tasks`` and ``solvers`` hold canonical specs (``cs[m=0.1628]``, ``aipo[alpha=0.01]``)."""

    priors: tuple
    tasks: tuple
    lams: tuple
    solvers: tuple
    splits: tuple
    seeds: tuple
    label: str = "main"
    domain: dict = field(default_factory=dict)   # the DOMAIN_KEYS this block sets itself (empty: the grid's)

    def as_dict(self) -> dict:
        return {"label": self.label, **{a: list(getattr(self, a)) for a in AXES}, **_plain(self.domain)}


@dataclass(frozen=True)
class Domain:
    """Where a block's images come from: its datasets, image size and images per split (and their data roots)."""

    dataset: str
    ood_dataset: str
    image_size: int
    images_per_split: dict
    data_root: str | None = None
    ood_data_root: str | None = None

    def dataset_for(self, split: str) -> tuple[str, str | None]:
        """(dataset name, data root) of a grid split ("id" or "ood"); both read the dataset's ``test`` split."""
        if split == "id":
            return self.dataset, self.data_root
        fallback = self.data_root if self.ood_dataset == self.dataset else None
        return self.ood_dataset, self.ood_data_root or fallback


def _plain(domain: dict) -> dict:
    return {k: ({s: "all" if n is None else n for s, n in sorted(v.items())} if k == "images_per_split" else v)
            for k, v in domain.items()}


@dataclass(frozen=True)
class Grid:
    name: str
    dataset: str
    ood_dataset: str
    image_size: int
    images_per_split: dict        # split -> first k images of its dataset's test split (None = all)
    budget: int                   # the largest budget (the only one unless ``budgets`` lists several)
    mle_steps: int
    blocks: tuple                 # (main Block, *extra Blocks)
    description: str = ""
    data_root: str | None = None
    ood_data_root: str | None = None
    prior_recipes: dict = field(default_factory=dict)
    source: str = ""              # preset name or file path it came from
    filters: dict = field(default_factory=dict)   # filters applied by apply_filters (axis -> values)
    unfiltered: dict | None = None                # resolved() of the grid before filters
    budgets: tuple = ()                           # every budget of the grid's budget axis, ascending
    protocol: str = DEFAULT_PROTOCOL              # bench/core/protocols.py
    unit_timeout_s: float | None = None           # wall-time limit per solver process of a batch (None: budget × rows)
    unit_memory_mb: int | None = None             # memory limit of a unit's solver process (None: 4096)

    def __post_init__(self):
        if not self.budgets:
            object.__setattr__(self, "budgets", (self.budget,))

    @property
    def main(self) -> Block:
        return self.blocks[0]

    def values(self, axis: str) -> list:
        """Every value of ``axis`` over all blocks, first-seen order, without duplicates."""
        out = []
        for b in self.blocks:
            for v in getattr(b, axis):
                if v not in out:
                    out.append(v)
        return out

    def domain(self, block: Block | None = None) -> Domain:
        """The domain of ``block`` (default: the main block's, the grid's top-level keys). Data roots apply only
        to the main domain's datasets."""
        main = Domain(self.dataset, self.ood_dataset, self.image_size, self.images_per_split, self.data_root,
                      self.ood_data_root)
        if block is None or not block.domain:
            return main
        d = replace(main, **block.domain)
        roots = {"data_root": d.data_root if d.dataset == self.dataset else None,
                 "ood_data_root": d.ood_data_root if d.ood_dataset == self.ood_dataset else None}
        return replace(d, **roots)

    def dataset_for(self, split: str, block: Block | None = None) -> tuple[str, str | None]:
        """(dataset name, data root) of a grid split ("id" or "ood") in ``block``'s domain (default: the main one)."""
        return self.domain(block).dataset_for(split)

    def resolved(self) -> dict:
        """The grid as plain data (canonical specs, "all" expanded): what run.json records and the hash covers."""
        return {
            "name": self.name, "description": self.description, "dataset": self.dataset,
            "ood_dataset": self.ood_dataset, "image_size": self.image_size,
            "images_per_split": {k: "all" if v is None else v for k, v in sorted(self.images_per_split.items())},
            "budget": self.budget if len(self.budgets) == 1 else list(self.budgets), "mle_steps": self.mle_steps,
            "protocol": self.protocol, "blocks": [b.as_dict() for b in self.blocks],
        }

    def resolved_unfiltered(self) -> dict:
        return self.unfiltered if self.unfiltered is not None else self.resolved()

    @property
    def hash(self) -> str:
        """sha256 (16 hex) of the resolved content *before filters* (filtered runs of one grid share a results
        directory); name, description and data roots are not part of it."""
        d = dict(self.resolved_unfiltered())
        for k in ("name", "description"):
            d.pop(k)
        return sha256_json(d, 16)


# ----------------------------------------------------------------------------------------------- type checks
def _block(where: str, raw: dict, base: dict | None) -> Block:
    vals = {}
    checkers = {"priors": _prior, "tasks": _task, "lams": _lam, "solvers": _solver, "splits": _split, "seeds": _seed}
    for axis in AXES:
        if axis in raw:
            v = _list(f"{where}{axis}", raw[axis], checkers[axis], allow_all=(axis == "solvers"))
            if v == "all":
                v = all_solvers()
                if not v:
                    _fail(f"{where}solvers", "is \"all\" but no solver is registered")
            vals[axis] = tuple(v)
        elif base is not None:
            vals[axis] = base[axis]
        else:
            raise AssertionError(axis)
    label = raw.get("label", "main" if base is None else None)
    if label is None:
        label = "extra"
    domain = {}
    if base is not None:
        if "dataset" in raw:
            domain["dataset"] = _dataset(f"{where}dataset", raw["dataset"])
        if "ood_dataset" in raw:
            domain["ood_dataset"] = _dataset(f"{where}ood_dataset", raw["ood_dataset"])
        if "image_size" in raw:
            domain["image_size"] = _image_size(f"{where}image_size", raw["image_size"])
        if "images_per_split" in raw:
            domain["images_per_split"] = _images_per_split(f"{where}images_per_split", raw["images_per_split"])
    return Block(label=_str(f"{where}label", label), domain=domain, **vals)


def _image_size(where: str, v) -> int:
    size = _int(where, v, lo=4)
    if size > MAX_IMAGE_SIZE:
        _fail(where, f"must be <= {MAX_IMAGE_SIZE} pixels, got {size}")
    return size


def _images_per_split(where: str, ips) -> dict:
    if isinstance(ips, dict):
        for k in ips:
            if k not in SPLITS:
                _fail(where, f"unknown split {k!r}; valid: {', '.join(SPLITS)}")
        return {s: _images_count(f"{where}.{s}", ips.get(s, 8)) for s in SPLITS}
    return dict.fromkeys(SPLITS, _images_count(where, ips))


# ---------------------------------------------------------------------------------------------- loading
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def grid_path(name_or_path: str) -> Path:
    """The file behind ``--grid``: a preset name, or a path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or "/" in name_or_path or "\\" in name_or_path or p.is_file():
        if not p.is_file():
            raise UserError(f"grid file {name_or_path!r} not found")
        return p
    q = PRESET_DIR / f"{name_or_path}.toml"
    if not q.is_file():
        raise UserError(f"unknown grid preset {name_or_path!r}; valid presets: {', '.join(preset_names())} "
                        f"(or a path to a .toml grid file)")
    return q


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:   # TOML is UTF-8 text: other bytes are a parse error
        raise UserError(f"cannot parse grid file {str(path)!r}: {e}") from None
    except OSError as e:
        raise UserError(f"cannot read grid file {str(path)!r}: {e.strerror}") from None


def load_grid(name_or_path: str, data_root: str | None = None, ood_data_root: str | None = None) -> Grid:
    """Read and validate a grid (preset name or file path). CLI ``--data-root`` / ``--ood-root`` override the file."""
    path = grid_path(name_or_path)
    raw = read_toml(path)
    g = parse_grid(raw, default_name=path.stem)
    g = replace(g, source=name_or_path)
    if data_root is not None:
        g = replace(g, data_root=str(data_root))
    if ood_data_root is not None:
        g = replace(g, ood_data_root=str(ood_data_root))
    return g


def parse_grid(raw: dict, default_name: str = "grid") -> Grid:
    """Validate a grid given as a dict (the parsed TOML). Raises one UserError naming the first bad field."""
    if not isinstance(raw, dict):
        raise UserError("a grid must be a table of keys")
    for k in raw:
        if k not in TOP_KEYS:
            raise UserError(f"unknown grid key {k!r}; valid keys: {', '.join(TOP_KEYS)}")
    for k in REQUIRED:
        if k not in raw:
            raise UserError(f"grid key {k!r} is missing (required: {', '.join(REQUIRED)})")
    name = _str("name", raw.get("name", default_name))
    if not NAME.match(name):
        _fail("name", f"{name!r} is not a safe name (letters, digits, '.', '_', '-'; at most 64; it names the "
                      f"default output folder results/<name>)")
    description = raw.get("description", "")
    if not isinstance(description, str):
        _fail("description", f"must be a string, got {description!r}")
    dataset = _dataset("dataset", raw.get("dataset", "lfw-faces"))
    ood = _dataset("ood_dataset", raw.get("ood_dataset", "ood"))
    roots = {}
    for k in ("data_root", "ood_data_root"):
        v = raw.get(k)
        roots[k] = None if v is None else _str(k, v)
    size = _image_size("image_size", raw.get("image_size", 16))
    ips = _images_per_split("images_per_split", raw.get("images_per_split", 8))
    raw_b = raw["budget"]
    budgets = _list("budget", raw_b, _int) if isinstance(raw_b, list) else [_int("budget", raw_b)]
    mle = _int("mle_steps", raw["mle_steps"], lo=0)
    for budget in budgets:
        if budget <= 0 or budget > MAX_BUDGET:
            _fail("budget", f"must be in 1..{MAX_BUDGET:,} prior passes per image, got {budget}")
        if budget < mle:
            _fail("budget", f"budget {budget} is smaller than mle_steps {mle} (the budget includes the MLE stage)")
    budgets = tuple(sorted(budgets))
    budget = budgets[-1]
    try:
        protocol = check_protocol(raw.get("protocol", DEFAULT_PROTOCOL))
    except UserError as e:
        _fail("protocol", str(e))
    recipes = raw.get("prior_recipes", {})
    if not isinstance(recipes, dict) or not all(isinstance(v, str) for v in recipes.values()):
        _fail("prior_recipes", "must be a table of checkpoint path = \"command line\"")

    limits = {}
    for k, lo, hi in (("unit_timeout_s", 1, 7 * 86400), ("unit_memory_mb", 64, 1 << 24)):
        v = raw.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi
                              or (k == "unit_memory_mb" and not isinstance(v, int))):
            _fail(k, f"must be a {'whole ' if k == 'unit_memory_mb' else ''}number in {lo} … {hi}, got {v!r}")
        limits[k] = v

    main_raw = {a: raw[a] for a in AXES if a in raw}
    main_raw.setdefault("splits", list(SPLITS))
    main_raw.setdefault("seeds", [0])
    main = _block("", main_raw, None)
    blocks = [main]
    extras = raw.get("extra", [])
    if not isinstance(extras, list) or not all(isinstance(e, dict) for e in extras):
        _fail("extra", "must be an array of tables ([[extra]])")
    base = {a: getattr(main, a) for a in AXES}
    for i, e in enumerate(extras):
        for k in e:
            if k not in EXTRA_KEYS:
                raise UserError(f"unknown key {k!r} in extra[{i}]; valid keys: {', '.join(EXTRA_KEYS)}")
        blocks.append(_block(f"extra[{i}].", {"label": f"extra{i}", **e}, base))
    return Grid(name=name, dataset=dataset, ood_dataset=ood, image_size=size, images_per_split=ips, budget=budget,
                budgets=budgets, mle_steps=mle, protocol=protocol, blocks=tuple(blocks), description=description.strip(), prior_recipes=dict(recipes),
                **roots, **limits)
