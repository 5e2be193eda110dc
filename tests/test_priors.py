"""Contract tests of the prior architectures (tests/kit/prior_contract.py), parametrized over every registered
architecture — one without the size presets fails them — and the shipped checkpoints, loading errors and training.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench.cli import main as cli_main
from bench.core.errors import UserError
from bench.priors.base import ARCHS, to_logit
from bench.priors.catalog import CHECKPOINT_DIR, SHIPPED, load_prior, shipped
from bench.priors.gaussian import GaussianLogitPrior
from bench.priors.training import save_checkpoint
from kit import prior_contract as pc

ARCH_NAMES = ARCHS.names()


def test_flow_archs_registered():
    assert {"realnvp", "glow", "gaussian"} <= set(ARCH_NAMES)


@pytest.fixture(scope="module", params=[(a, p) for a in ARCH_NAMES for p in pc.SMALL], ids=lambda ap: f"{ap[0]}-{ap[1]}")
def model(request):
    return pc.make_model(*request.param)


@pytest.mark.parametrize("check", pc.MODEL_CHECKS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_model_contract(check, model):
    check(model)


@pytest.mark.parametrize("arch", ARCH_NAMES)
@pytest.mark.parametrize("check", pc.ARCH_CHECKS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_arch_contract(check, arch):
    check(arch)


def test_an_architecture_without_presets_fails_the_contract():
    """A registered architecture that declares no presets is not skipped: its contract checks fail."""
    from bench.priors.base import FlowPrior

    class NoPresets(FlowPrior):
        pass

    with ARCHS.temporarily("no-presets", NoPresets):
        assert "no-presets" in ARCHS.names()
        with pytest.raises(AssertionError):
            pc.check_declarations("no-presets")
        with pytest.raises(UserError, match="unknown preset 'xs' for prior 'no-presets'"):
            pc.make_model("no-presets", "xs")


def test_glow_actnorm_is_data_initialised():
    m = ARCHS.get("glow")((1, 16, 16), "xs")
    flags = [k for k in m.state_dict() if k.endswith("initialized")]
    assert flags and all(int(m.state_dict()[k]) == 0 for k in flags)


def test_bad_image_shape_is_user_error():
    with pytest.raises(UserError, match="divisible"):
        ARCHS.get("glow")((1, 12, 12), "s")
    with pytest.raises(UserError, match="preset"):
        ARCHS.get("realnvp")((1, 16, 16), "huge")
    with pytest.raises(UserError, match=r"parameter 'hidden' of prior 'glow' must be in \[1, 4096\], got 5000"):
        ARCHS.get("glow")((1, 16, 16), "xs", hidden=5000)
    with pytest.raises(UserError, match="unknown parameter 'width' for prior 'realnvp'"):
        ARCHS.get("realnvp")((1, 16, 16), "xs", width=3)


# --- shipped checkpoints ------------------------------------------------------------------------------------------
def gaussian_test_bpd(train, test):
    """Independent per-pixel Gaussian in logit space fitted on the train cell centres; test bits/dim."""
    k_tr, k_te = torch.round(train * 255), torch.round(test * 255)
    u, _ = to_logit(((k_tr + 0.5) / 256).double())
    g = GaussianLogitPrior(train.shape[1:], mean=u.mean(0).float(), std=u.std(0, unbiased=False).float())
    with torch.no_grad():
        lp = g.log_prob((k_te + 0.5) / 256)
    n = test[0].numel()
    return float((-lp / (n * math.log(2)) + 8).mean())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prior_loads_and_beats_gaussian(name, capsys):
    from bench.datasets.base import load_dataset

    lp = load_prior(name)
    assert lp.name == name and len(lp.sha256) == 64
    assert not lp.model.training and not any(p.requires_grad for p in lp.model.parameters())
    assert lp.provenance["sha256"] == lp.sha256
    prov = lp.provenance
    train = load_dataset(prov["dataset"], "train", prov["size"]).images
    test = load_dataset(prov["dataset"], "test", prov["size"]).images
    k = torch.round(test * 255)
    bpd = float((-lp.model.log_prob((k + 0.5) / 256) / (test[0].numel() * math.log(2)) + 8).mean())
    assert abs(bpd - prov["test_bpd"]) < 1e-3
    assert bpd < gaussian_test_bpd(train, test)
    assert (CHECKPOINT_DIR / f"{name}.pt").stat().st_size < 5e6
    assert cli_main(["list", "priors"]) == 0
    assert name in capsys.readouterr().out
    assert name in [r["name"] for r in shipped()]


# --- loading errors -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    m = pc.make_model("glow", "xs")
    save_checkpoint(m, d / "good.pt")
    return d / "good.pt"


def test_load_by_path(ckpt):
    lp = load_prior(str(ckpt))
    assert lp.name == "good" and lp.provenance == {} and lp.model.config["preset"] == "xs"


def test_load_missing_path(tmp_path):
    with pytest.raises(UserError, match="not found") as e:
        load_prior(str(tmp_path / "nope.pt"))
    assert "nope.pt" in str(e.value)
    with pytest.raises(UserError, match="unknown prior"):
        load_prior("no-such-prior")


def test_load_garbage_file(tmp_path):
    p = tmp_path / "garbage.pt"
    p.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(UserError, match="garbage.pt"):
        load_prior(str(p))


def test_load_truncated_file(ckpt, tmp_path):
    p = tmp_path / "trunc.pt"
    p.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(UserError, match="trunc.pt"):
        load_prior(str(p))


def test_load_not_a_checkpoint_dict(tmp_path):
    p = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), p)
    with pytest.raises(UserError, match="tensor.pt.*state_dict"):
        load_prior(str(p))


def test_load_mismatched_config(ckpt, tmp_path):
    payload = torch.load(ckpt, weights_only=True)
    cfg = json.loads(payload["config"])
    cfg["hidden"] = cfg["hidden"] * 2
    payload["config"] = json.dumps(cfg)
    p = tmp_path / "mismatch.pt"
    torch.save(payload, p)
    with pytest.raises(UserError, match="mismatch.pt.*do not match") as e:
        load_prior(str(p))
    assert "glow" in str(e.value)
    cfg["arch"] = "realnvp"
    payload["config"] = json.dumps(cfg)
    torch.save(payload, p)
    with pytest.raises(UserError, match="mismatch.pt"):
        load_prior(str(p))


def test_inspect_prior_truncated_one_line(ckpt, tmp_path, capsys):
    p = tmp_path / "trunc.pt"
    p.write_bytes(ckpt.read_bytes()[:1000])
    assert cli_main(["inspect-prior", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "trunc.pt" in err and len(err.splitlines()) == 1


def test_inspect_prior_prints_config(ckpt, capsys):
    assert cli_main(["inspect-prior", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert '"arch": "glow"' in out and "sha256" in out


# --- training -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_train_prior_smoke(arch, tmp_path, capsys):
    rc = cli_main(["train-prior", "--prior", arch, "--dataset", "lfw-faces", "--size", "16", "--preset", "xs",
                   "--steps", "5", "--eval-every", "5", "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    assert rc == 0
    pt, js = tmp_path / f"{arch}-xs.pt", tmp_path / f"{arch}-xs.json"
    assert pt.is_file() and js.is_file()
    prov = json.loads(js.read_text())
    for key in ("config", "dataset", "size", "steps_run", "best_step", "seed", "train_bpd", "val_bpd", "test_bpd",
                "git_commit", "sha256", "torch_version", "wall_time_s"):
        assert key in prov, key
    assert prov["steps_run"] == 5 and math.isfinite(prov["test_bpd"])
    lp = load_prior(str(pt))
    assert lp.sha256 == prov["sha256"] and lp.model.config == prov["config"]
    assert "bits/dim" in capsys.readouterr().out


OOD_GAP = 0.8   # bits/dim: an OOD set must score at least this much worse than the prior's own test images


@pytest.mark.parametrize("name", [r["name"] for r in shipped()])
def test_ood_set_is_out_of_distribution(name):
    """Every shipped prior scores its dataset's declared OOD set ≥ OOD_GAP bits/dim worse than its test images, and
    the figure its provenance records (shown by `list priors`) is what it scores now."""
    from bench.datasets.base import load_dataset
    from bench.priors.training import evaluate_bpd, ood_bpd

    lp = load_prior(name)
    prov = lp.provenance
    size = prov["size"]
    measured = ood_bpd(lp.model, prov["dataset"], size)
    assert measured["ood_bpd"] == pytest.approx(prov["ood_bpd"], abs=2e-3)
    try:
        test_images = load_dataset(prov["dataset"], "test", size, limit=256).images
    except UserError:                          # a split of fewer than 256 images (20 LFW test faces): all of it
        test_images = load_dataset(prov["dataset"], "test", size).images
    test = evaluate_bpd(lp.model, test_images)
    assert measured["ood_bpd"] - test >= OOD_GAP, (name, measured, test)
