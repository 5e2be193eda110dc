"""Contract tests of the flow priors, parametrized over every registered flow architecture and preset.

Randomly initialised models are used for the maths contracts: actnorm is initialised on a random batch, then every
parameter is perturbed so that the zero-initialised couplings and split priors are not the identity.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench.cli import main as cli_main
from bench.errors import UserError
from bench.priors.base import ARCHS, GaussianLogitPrior, std_normal_logp, to_logit
from bench.priors.catalog import SHIPPED, CHECKPOINT_DIR, load_prior, shipped
from bench.priors.presets import PRESETS, build_prior
from bench.priors.training import save_checkpoint

FLOWS = [n for n in ARCHS.names() if n in PRESETS]
SMALL = ["xs", "s"]


def make_model(arch, preset, shape=(1, 16, 16), seed=0, dtype=torch.float32):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = ARCHS.get(arch)(shape, preset)
        m.train()
        with torch.no_grad():
            m.log_prob(torch.rand(16, *shape))  # data-dependent actnorm init
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    m.eval().requires_grad_(False)
    return m.to(dtype)


def test_flow_archs_registered():
    assert {"realnvp", "glow"} <= set(FLOWS)


@pytest.fixture(scope="module", params=[(a, p) for a in FLOWS for p in SMALL], ids=lambda ap: f"{ap[0]}-{ap[1]}")
def model(request):
    return make_model(*request.param)


def edge_batch(shape=(1, 16, 16)):
    g = torch.Generator().manual_seed(1)
    x = torch.rand((4, *shape), generator=g)
    x[0] = 0.0
    x[1] = 1.0
    return x


def test_decode_encode_roundtrip(model):
    x = edge_batch()
    xr = model.decode(model.encode(x))
    assert (xr - x).abs().max().item() < 1e-5


def test_encode_decode_roundtrip(model):
    g = torch.Generator().manual_seed(2)
    # the flow itself (logit space) is exact for any z
    z = torch.randn((4, *model.latent_shape), generator=g)
    assert (model._forward(model._inverse(z)[0])[0] - z).abs().max().item() < 1e-5
    # through the logit: latents of images in the data range (plus a perturbation) round-trip to float32 precision
    # relative to |z| (1e-4: the logit near the edges of [0, 1] and the flow's conditioning amplify rounding; the
    # max error measured on an AMD EPYC was 1.2e-4 at |z| ≈ 6); far-out z decode to |u| ≫ 3 where sigmoid
    # saturates in float32, so those are checked in float64 below
    z = model.encode(edge_batch()) + 0.1 * torch.randn((4, *model.latent_shape), generator=g)
    torch.testing.assert_close(model.encode(model.decode(z)), z, rtol=1e-4, atol=1e-4)
    z = torch.randn((4, *model.latent_shape), generator=g, dtype=torch.float64)
    m64 = model.double()
    try:
        assert (m64.encode(m64.decode(z)) - z).abs().max().item() < 1e-8
    finally:
        model.float()
    assert model.encode(edge_batch()).shape == (4, *model.image_shape)


@pytest.mark.parametrize("arch", FLOWS)
@pytest.mark.parametrize("preset", SMALL)
def test_log_prob_matches_bruteforce_jacobian(arch, preset):
    """log p(x) = log N(z) + log|det ∂z/∂x| with the full autograd Jacobian of x -> z (float64, 1x8x8)."""
    m = make_model(arch, preset, shape=(1, 8, 8), dtype=torch.float64)
    x = torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.98 + 0.01
    jac = torch.autograd.functional.jacobian(lambda v: m.encode(v.view(1, 1, 8, 8)).flatten(), x.flatten())
    assert jac.shape == (64, 64)
    z = m.encode(x)
    brute = std_normal_logp(z) + torch.linalg.slogdet(jac)[1]
    lp = m.log_prob(x)
    assert torch.allclose(lp, brute, rtol=1e-4, atol=0), (lp.item(), brute.item())
    # and the model is not trivially the identity/logit map
    assert (z - to_logit(x)[0]).abs().max() > 1e-3


def test_batch_independence(model):
    x = edge_batch()
    lp = model.log_prob(x)
    single = torch.cat([model.log_prob(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(lp, single, rtol=1e-5, atol=1e-3)
    # training mode after initialisation must not use batch statistics either
    model.train()
    try:
        assert torch.allclose(model.log_prob(x), lp, rtol=1e-5, atol=1e-3)
    finally:
        model.eval()


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_finite_gradients_at_edges(model, value):
    x = torch.full((2, *model.image_shape), value, requires_grad=True)
    model.log_prob(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_decode_with_log_prob(model):
    z = 0.8 * torch.randn((3, *model.latent_shape), generator=torch.Generator().manual_seed(4))
    x, lp = model.decode_with_log_prob(z)
    assert torch.allclose(x, model.decode(z), atol=1e-6)
    assert torch.allclose(lp, model.log_prob(x), rtol=1e-4, atol=1e-2)


def test_sample_shape_and_range(model):
    s = model.sample(3, 0.7, generator=torch.Generator().manual_seed(5))
    assert s.shape == (3, *model.image_shape) and s.min() >= 0 and s.max() <= 1


@pytest.mark.parametrize("arch", FLOWS)
def test_config_round_trip(arch):
    m = make_model(arch, "xs")
    cfg = json.loads(json.dumps(m.config))
    assert cfg["arch"] == arch and cfg["preset"] == "xs" and cfg["image_shape"] == [1, 16, 16]
    m2 = build_prior(cfg)
    m2.load_state_dict(m.state_dict())
    m2.eval()
    x = edge_batch()
    assert torch.equal(m.log_prob(x), m2.log_prob(x))


@pytest.mark.parametrize("arch", FLOWS)
def test_actnorm_initialises_once(arch):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = ARCHS.get(arch)((1, 16, 16), "xs")
    m.eval()
    lp0 = m.log_prob(edge_batch())  # eval mode: no initialisation
    assert all(int(b) == 0 for k, b in m.state_dict().items() if k.endswith("initialized"))
    m.train()
    m.log_prob(torch.rand(8, 1, 16, 16))
    flags = [int(b) for k, b in m.state_dict().items() if k.endswith("initialized")]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.log_prob(torch.rand(8, 1, 16, 16) * 0.1)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(flags)
    if arch == "glow":
        assert len(flags) > 0
    assert torch.isfinite(lp0).all()


@pytest.mark.parametrize("arch", FLOWS)
@pytest.mark.parametrize("preset", SMALL)
@pytest.mark.parametrize("size", [8, 32])
def test_other_image_sizes(arch, preset, size):
    m = make_model(arch, preset, shape=(1, size, size))
    x = torch.rand(2, 1, size, size)
    assert m.log_prob(x).shape == (2,)
    assert (m.decode(m.encode(x)) - x).abs().max() < 1e-5


@pytest.mark.parametrize("arch", FLOWS)
def test_paper_preset_builds_and_runs(arch):
    m = ARCHS.get(arch)(None, "paper").eval().requires_grad_(False)
    assert m.image_shape == (3, 64, 64)
    with torch.no_grad():
        lp = m.log_prob(torch.rand(1, 3, 64, 64))
    assert lp.shape == (1,) and torch.isfinite(lp).all()
    if arch == "glow":
        assert (m.config["levels"], m.config["steps"], m.config["hidden"]) == (4, 32, 512)


def test_bad_image_shape_is_user_error():
    with pytest.raises(UserError, match="divisible"):
        ARCHS.get("glow")((1, 12, 12), "s")
    with pytest.raises(UserError, match="preset"):
        ARCHS.get("realnvp")((1, 16, 16), "huge")


# --- shipped checkpoints ------------------------------------------------------------------------------------------
def gaussian_test_bpd(train, test):
    """Independent per-pixel Gaussian in logit space fitted on the train cell centres; test bits/dim."""
    k_tr, k_te = torch.round(train * 255), torch.round(test * 255)
    u, _ = to_logit(((k_tr + 0.5) / 256).double())
    g = GaussianLogitPrior(train.shape[1:], u.mean(0).float(), u.std(0, unbiased=False).float())
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
    m = make_model("glow", "xs")
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
@pytest.mark.parametrize("arch", FLOWS)
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
