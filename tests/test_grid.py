"""Grid files: schema validation (one UserError naming the field), presets, filters, hashing."""
from __future__ import annotations

import pytest

from bench.cli import main as cli_main
from bench.core.errors import UserError
from bench.plan.filters import apply_filters
from bench.plan.grid import SPLITS, load_grid, parse_grid, preset_names

BASE = {
    "name": "t", "priors": ["realnvp-xs"], "tasks": ["denoise", "cs[m=0.1628]"], "lams": [0.5, 2.0],
    "solvers": ["aipo"], "budget": 50, "mle_steps": 10, "images_per_split": 2,
}


def grid_of(**changes):
    raw = {**BASE, **changes}
    for k, v in list(raw.items()):
        if v is None:
            raw.pop(k)
    return parse_grid(raw)


def test_minimal_grid_defaults():
    g = grid_of()
    assert g.dataset == "lfw-faces" and g.ood_dataset == "ood"
    assert g.main.splits == SPLITS and g.main.seeds == (0,)
    assert g.main.tasks == ("denoise", "cs[m=0.1628]")
    assert g.images_per_split == {"id": 2, "ood": 2}


@pytest.mark.parametrize("changes, field", [
    ({"colour": 1}, "colour"),
    ({"solvers": ["no-such-solver"]}, "no-such-solver"),
    ({"solvers": ["aipo[nope=1]"]}, "nope"),
    ({"tasks": ["deblur"]}, "deblur"),
    ({"tasks": ["cs[m=2.5]"]}, "tasks[0]"),
    ({"priors": ["no-such-prior"]}, "no-such-prior"),
    ({"dataset": "mnist"}, "mnist"),
    ({"ood_dataset": "nope"}, "ood_dataset"),
    ({"lams": [0.5, -1.0]}, "lams[1]"),
    ({"lams": []}, "lams"),
    ({"lams": [0.5, 0.5]}, "duplicate"),
    ({"lams": ["big"]}, "lams[0]"),
    ({"solvers": []}, "solvers"),
    ({"splits": ["id", "train"]}, "splits[1]"),
    ({"seeds": [-1]}, "seeds[0]"),
    ({"budget": 0}, "budget"),
    ({"budget": 5, "mle_steps": 10}, "mle_steps"),
    ({"budget": "many"}, "budget"),
    ({"image_size": "16"}, "image_size"),
    ({"images_per_split": 0}, "images_per_split"),
    ({"images_per_split": "some"}, "images_per_split"),
    ({"images_per_split": {"test": 3}}, "images_per_split"),
    ({"budget": None}, "budget"),
    ({"extra": [{"tasks": ["denoise"], "budget": 3}]}, "extra[0]"),
    ({"extra": [{"lams": [-2.0]}]}, "extra[0].lams[0]"),
])
def test_bad_grid_names_the_field(changes, field):
    with pytest.raises(UserError) as e:
        grid_of(**changes)
    msg = str(e.value)
    assert field in msg and "\n" not in msg


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UserError, match="valid keys: .*budget"):
        grid_of(colour=1)


def test_solvers_all_expands_to_registry():
    from bench.solvers.base import SOLVERS

    g = grid_of(solvers="all")
    assert list(g.main.solvers) == SOLVERS.names()


def test_extra_block_inherits_and_overrides():
    g = grid_of(extra=[{"label": "sweep", "tasks": ["cs[m=0.05]"], "lams": [0.5]}])
    assert len(g.blocks) == 2
    sweep = g.blocks[1]
    assert sweep.label == "sweep" and sweep.tasks == ("cs[m=0.05]",) and sweep.lams == (0.5,)
    assert sweep.priors == g.main.priors and sweep.solvers == g.main.solvers


@pytest.mark.parametrize("name", preset_names())
def test_presets_validate(name):
    g = load_grid(name)
    assert g.name == name
    assert g.budget > 0 and g.budget >= g.mle_steps
    assert set(g.values("tasks")) >= {"denoise", "inpaint"}


def test_preset_contents():
    smoke, faces = load_grid("smoke"), load_grid("faces")
    assert set(smoke.main.priors) == {"realnvp-xs", "glow-xs"} and smoke.images_per_split == {"id": 2, "ood": 2}
    assert smoke.main.lams == (0.5, 2.0)
    assert set(faces.main.priors) == {"realnvp-s", "glow-s"} and faces.images_per_split["id"] == 8
    assert faces.main.lams == (0.3, 0.5, 1.0, 1.5, 2.0)
    for g in (smoke, faces):
        assert g.main.tasks == ("denoise", "cs", "cs[m=0.1628]", "inpaint")  # cs[m=0.3255] is cs's default
    default = load_grid("default")
    assert default.dataset == "fashion-mnist" and default.image_size == 28 and default.protocol == "robust"
    assert set(default.main.priors) == {"realnvp-m", "glow-m"}
    full = load_grid("full")
    assert full.main.seeds == (0,) and full.images_per_split["id"] is None and full.ood_dataset == "textures"
    assert {b.domain.get("dataset", full.dataset) for b in full.blocks} == {"lfw-faces", "fashion-mnist"}
    paper = load_grid("paper")
    assert paper.dataset == "celeba" and paper.image_size == 64 and paper.images_per_split["id"] == 200
    assert all(p in paper.prior_recipes for p in paper.main.priors)


def test_unknown_preset_cli(capsys):
    assert cli_main(["run", "--grid", "no-such-grid"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-grid" in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_grid_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_grid(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(UserError, match="cannot parse"):
        load_grid(str(bad))
    good = tmp_path / "mine.toml"
    good.write_text('priors = ["glow-xs"]\ntasks = ["denoise"]\nlams = [1.0]\nsolvers = ["aipo"]\n'
                    "budget = 10\nmle_steps = 0\n")
    g = load_grid(str(good), data_root="/data")
    assert g.name == "mine" and g.data_root == "/data"


def test_hash_is_content_not_name():
    a, b = grid_of(), grid_of(name="other", description="words")
    assert a.hash == b.hash
    assert grid_of(lams=[0.5, 1.0]).hash != a.hash
    assert grid_of(budget=51).hash != a.hash


# ------------------------------------------------------------------------------------------------- filters
def test_filters_narrow():
    g = grid_of(solvers=["aipo", "aipo[alpha=0.01]", "zero-init"])
    f = apply_filters(g, task=["cs[m=0.1628]"], lam=["2"], split=["ood"])
    assert f.main.tasks == ("cs[m=0.1628]",) and f.main.lams == (2.0,) and f.main.splits == ("ood",)
    assert apply_filters(g, solver=["aipo"]).main.solvers == ("aipo", "aipo[alpha=0.01]")  # bare name: all variants
    assert apply_filters(g, solver=["aipo[alpha=0.01]"]).main.solvers == ("aipo[alpha=0.01]",)
    assert apply_filters(g, solver=["zero-init,aipo[alpha=0.01]"]).main.solvers == ("aipo[alpha=0.01]", "zero-init")
    assert apply_filters(g, task=["cs"]).main.tasks == ("cs[m=0.1628]",)
    assert apply_filters(g) is g


@pytest.mark.parametrize("kw, value", [
    ({"task": ["inpaint"]}, "inpaint"), ({"lam": ["0.3"]}, "0.3"), ({"prior": ["glow-s"]}, "glow-s"),
    ({"solver": ["lasso-dct"]}, "lasso-dct"), ({"split": ["val"]}, "val"),
])
def test_filter_value_not_in_grid(kw, value):
    with pytest.raises(UserError) as e:
        apply_filters(grid_of(), **kw)
    assert value in str(e.value) and "valid:" in str(e.value)


def test_filters_apply_to_extra_blocks():
    g = grid_of(extra=[{"label": "sweep", "tasks": ["cs[m=0.05]"], "lams": [0.5], "solvers": ["zero-init"]}])
    f = apply_filters(g, task=["cs[m=0.05]"])
    assert [b.label for b in f.blocks] == ["sweep"]
    with pytest.raises(UserError, match="leave no cell"):
        apply_filters(g, task=["cs[m=0.05]"], solver=["aipo"])


def test_list_grids(capsys):
    assert cli_main(["list", "grids"]) == 0
    out = capsys.readouterr().out
    for name in preset_names():
        assert name in out


def test_block_with_its_own_domain_plans_its_own_images():
    """An extra block may bring its own dataset, OOD set, image size and image count: its units read those, the
    main block's units keep the grid's, a bad domain value names its field, and filters keep the domain."""
    from bench.plan.units import plan_units

    g = grid_of(solvers=["observed"], tasks=["denoise"], lams=[1.0], images_per_split=1,
                extra=[{"label": "sharp", "dataset": "fashion-mnist", "ood_dataset": "patches", "image_size": 28,
                        "images_per_split": {"id": 2, "ood": 1}, "priors": ["glow-m"]}])
    assert g.blocks[1].domain["image_size"] == 28 and g.domain(g.main).image_size == 16
    assert g.blocks[1].as_dict()["dataset"] == "fashion-mnist" and "dataset" not in g.main.as_dict()
    units = plan_units(g)
    got = {(u.prior, u.dataset, u.image_size, len(u.image_ids)) for u in units}
    assert got == {("realnvp-xs", "lfw-faces", 16, 1), ("realnvp-xs", "ood", 16, 1),
                   ("glow-m", "fashion-mnist", 28, 2), ("glow-m", "patches", 28, 1)}
    assert apply_filters(g, prior=["glow-m"]).blocks[0].domain == g.blocks[1].domain
    with pytest.raises(UserError, match="extra\\[0\\].image_size"):
        grid_of(extra=[{"image_size": 2}])
    with pytest.raises(UserError, match="prior 'realnvp-xs' models images of shape"):
        plan_units(grid_of(extra=[{"image_size": 28, "dataset": "fashion-mnist"}]))
