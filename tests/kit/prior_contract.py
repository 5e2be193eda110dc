"""The contract every registered prior architecture must satisfy (tests/test_priors.py runs it over every name in
ARCHS; tests/test_plugin_prior.py runs it on a plugin architecture written as one file).

Randomly initialised models are used for the maths contracts: actnorm is initialised on a random batch, then every
weight is perturbed so that zero-initialised couplings and split priors are not the identity. ``MODEL_CHECKS``
take such a model (built for each of the ``SMALL`` presets), ``ARCH_CHECKS`` take the architecture's name.
"""
from __future__ import annotations

import json

import torch

from bench.priors.base import ARCHS, PRESET_SHAPES, build_prior, std_normal_logp, to_logit

SMALL = ("xs", "s")


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


def edge_batch(shape=(1, 16, 16)):
    g = torch.Generator().manual_seed(1)
    x = torch.rand((4, *shape), generator=g)
    x[0] = 0.0
    x[1] = 1.0
    return x


# --- checks on a model --------------------------------------------------------------------------------------------
def check_decode_encode_roundtrip(model):
    x = edge_batch()
    xr = model.decode(model.encode(x))
    assert (xr - x).abs().max().item() < 1e-5


def check_encode_decode_roundtrip(model):
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


def check_batch_independence(model):
    x = edge_batch()
    lp = model.log_prob(x)
    assert lp.shape == (len(x),) and torch.isfinite(lp).all()
    single = torch.cat([model.log_prob(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(lp, single, rtol=1e-5, atol=1e-3)
    # training mode after initialisation must not use batch statistics either
    model.train()
    try:
        assert torch.allclose(model.log_prob(x), lp, rtol=1e-5, atol=1e-3)
    finally:
        model.eval()


def check_finite_gradients_at_edges(model):
    for value in (0.0, 1.0):
        x = torch.full((2, *model.image_shape), value, requires_grad=True)
        model.log_prob(x).sum().backward()
        assert torch.isfinite(x.grad).all()
        assert x.grad.abs().sum() > 0


def check_decode_with_log_prob(model):
    z = 0.8 * torch.randn((3, *model.latent_shape), generator=torch.Generator().manual_seed(4))
    x, lp = model.decode_with_log_prob(z)
    assert torch.allclose(x, model.decode(z), atol=1e-6)
    assert torch.allclose(lp, model.log_prob(x), rtol=1e-4, atol=1e-2)


def check_sample_shape_and_range(model):
    s = model.sample(3, 0.7, generator=torch.Generator().manual_seed(5))
    assert s.shape == (3, *model.image_shape) and s.min() >= 0 and s.max() <= 1


MODEL_CHECKS = (check_decode_encode_roundtrip, check_encode_decode_roundtrip, check_batch_independence,
                check_finite_gradients_at_edges, check_decode_with_log_prob, check_sample_shape_and_range)


# --- checks on an architecture ------------------------------------------------------------------------------------
def check_declarations(arch):
    """Every size preset is declared and sets exactly the declared hyper-parameters, each within its range."""
    cls = ARCHS.get(arch)
    assert set(cls.presets) == set(PRESET_SHAPES), (arch, sorted(cls.presets))
    for preset, values in cls.presets.items():
        assert set(values) == set(cls.hyperparameters), (arch, preset, sorted(values))
        assert all(cls.hyperparameters[k].accepts(v) for k, v in values.items()), (arch, preset, values)
    assert all(p.doc for p in cls.hyperparameters.values()) and cls.description


def check_log_prob_matches_bruteforce_jacobian(arch):
    """log p(x) = log N(z) + log|det ∂z/∂x| with the full autograd Jacobian of x -> z (float64, 1x8x8)."""
    for preset in SMALL:
        m = make_model(arch, preset, shape=(1, 8, 8), dtype=torch.float64)
        x = torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.98 + 0.01
        jac = torch.autograd.functional.jacobian(lambda v: m.encode(v.view(1, 1, 8, 8)).flatten(), x.flatten())
        assert jac.shape == (64, 64)
        z = m.encode(x)
        brute = std_normal_logp(z) + torch.linalg.slogdet(jac)[1]
        lp = m.log_prob(x)
        assert torch.allclose(lp, brute, rtol=1e-4, atol=0), (preset, lp.item(), brute.item())
        # and the model is not trivially the identity/logit map
        assert (z - to_logit(x)[0]).abs().max() > 1e-3


def check_config_round_trip(arch):
    m = make_model(arch, "xs")
    cfg = json.loads(json.dumps(m.config))
    assert cfg["arch"] == arch and cfg["preset"] == "xs" and cfg["image_shape"] == [1, 16, 16]
    m2 = build_prior(cfg)
    m2.load_state_dict(m.state_dict())
    m2.eval()
    x = edge_batch()
    assert torch.equal(m.log_prob(x), m2.log_prob(x))


def check_initialises_once(arch):
    """Data-dependent initialisation (actnorm) happens on the first training-mode pass only, never in eval mode."""
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
    assert torch.isfinite(lp0).all()


def check_other_image_sizes(arch):
    for preset in SMALL:
        for size in (8, 32):
            m = make_model(arch, preset, shape=(1, size, size))
            x = torch.rand(2, 1, size, size)
            assert m.log_prob(x).shape == (2,)
            assert (m.decode(m.encode(x)) - x).abs().max() < 1e-5


def check_paper_preset_builds_and_runs(arch):
    m = ARCHS.get(arch)(None, "paper").eval().requires_grad_(False)
    assert m.image_shape == PRESET_SHAPES["paper"] == (3, 64, 64)
    with torch.no_grad():
        lp = m.log_prob(torch.rand(1, 3, 64, 64))
    assert lp.shape == (1,) and torch.isfinite(lp).all()


ARCH_CHECKS = (check_declarations, check_log_prob_matches_bruteforce_jacobian, check_config_round_trip,
               check_initialises_once, check_other_image_sizes, check_paper_preset_builds_and_runs)


def check_all(arch: str) -> None:
    """Every check of the contract on ``arch``: the architecture's, then each model check on each small preset."""
    for check in ARCH_CHECKS:
        check(arch)
    for preset in SMALL:
        model = make_model(arch, preset)
        for check in MODEL_CHECKS:
            check(model)
