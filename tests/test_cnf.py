"""Continuous normalising flows: the change of variables against closed forms, Hutchinson's estimator,
inversion, gradients against finite differences, and learning a toy density."""

import math

import pytest
import torch
from scipy.linalg import expm

from odekit.data.toy_densities import TOY_DENSITIES, toy_density
from odekit.models.cnf import CNF, ConcatMLP, standard_normal_log_prob

F64 = torch.float64


class Linear(torch.nn.Module):
    """dz/dt = A z: z(T) = e^{AT} z(0) and ∫ tr = T·tr(A), exactly."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a.clone())

    def forward(self, t, z):
        return z @ self.a.T


A = torch.tensor([[-0.3, 0.8, 0.1], [-0.5, 0.2, 0.0], [0.3, -0.1, 0.4]], dtype=F64)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_a_linear_flow_matches_the_closed_form(trace):
    torch.manual_seed(0)
    flow = CNF(Linear(A), t_end=1.5, trace=trace, rtol=1e-10, atol=1e-10)
    z0 = torch.randn(4000 if trace == "hutchinson" else 5, 3, dtype=F64)
    out = flow(z0)
    torch.testing.assert_close(out.z, z0 @ torch.from_numpy(expm(A.numpy() * 1.5)).T, rtol=1e-8, atol=1e-8)
    if trace == "exact":
        torch.testing.assert_close(out.log_det, torch.full((5,), 1.5 * A.trace().item(), dtype=F64))
    else:  # unbiased: εᵀAε has mean tr(A); Rademacher's variance is 2 Σ_{i≠j} a_ij² (over T: × T²)
        variance = 2 * (A.square().sum() - A.diag().square().sum()).item() * 1.5**2
        assert abs(out.log_det.mean().item() - 1.5 * A.trace().item()) < 4 * math.sqrt(variance / 4000)


def test_gaussian_noise_is_unbiased_too():
    torch.manual_seed(1)
    flow = CNF(Linear(A), trace="hutchinson", noise="gaussian", rtol=1e-8, atol=1e-8)
    out = flow(torch.randn(4000, 3, dtype=F64))
    variance = (A.square().sum() + (A * A.T).sum()).item()  # Var εᵀAε for Gaussian ε: ‖A‖² + tr(A A)
    assert abs(out.log_det.mean().item() - A.trace().item()) < 4 * math.sqrt(variance / 4000)


def test_reverse_inverts_the_flow_and_negates_the_log_determinant():
    torch.manual_seed(0)
    flow = CNF(ConcatMLP(2, (16, 16)).double(), trace="exact", rtol=1e-10, atol=1e-10)
    x = torch.randn(6, 2, dtype=F64)
    with torch.no_grad():
        forward = flow(x)
        back = flow(forward.z, reverse=True)
    torch.testing.assert_close(back.z, x, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(back.log_det, -forward.log_det, rtol=1e-7, atol=1e-7)


def test_regularisers_integrate_the_kinetic_energy_and_the_frobenius_norm():
    """For dz/dt = Az the Rademacher estimate εᵀA Aᵀε of ‖A‖_F² is exact on average; ∫‖Az‖² by quadrature."""
    torch.manual_seed(0)
    flow = CNF(Linear(A), t_end=1.0, regularise=True, rtol=1e-10, atol=1e-10)
    z0 = torch.randn(3000, 3, dtype=F64)
    out = flow(z0)
    ts = torch.linspace(0, 1, 201, dtype=F64)
    path = torch.stack([z0 @ torch.from_numpy(expm(A.numpy() * s)).T for s in ts.tolist()])
    kinetic = torch.trapezoid((path @ A.T).square().sum(-1), ts, dim=0)
    torch.testing.assert_close(out.kinetic, kinetic, rtol=1e-3, atol=1e-6)
    assert out.jacobian.mean().item() == pytest.approx(A.square().sum().item(), rel=0.05)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_log_likelihood_gradients_match_finite_differences(gradient):
    torch.manual_seed(0)
    flow = CNF(ConcatMLP(2, (8,)).double(), trace="exact", gradient=gradient, rtol=1e-10, atol=1e-10)
    x = torch.randn(5, 2, dtype=F64)

    def nll():
        out = flow(x)
        return -(standard_normal_log_prob(out.z) + out.log_det).mean()

    nll().backward()
    weight = flow.dynamics.net.layers[0].weight
    for index in ((0, 0), (3, 2)):
        eps = 1e-6
        with torch.no_grad():
            weight[index] += eps
            up = nll().item()
            weight[index] -= 2 * eps
            down = nll().item()
            weight[index] += eps
        assert weight.grad[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_toy_densities_sample_where_their_density_lives():
    generator = torch.Generator().manual_seed(0)
    for name, density in TOY_DENSITIES.items():
        points = density.sample(2000, generator)
        assert points.shape == (2000, 2) and points.dtype == F64 and torch.isfinite(points).all(), name
        if density.log_prob is not None:
            assert torch.isfinite(density.log_prob(points)).all(), name
    checker = toy_density("checkerboard").log_prob(torch.tensor([[0.5, 0.5], [0.5, -0.5], [3.0, 0.0]], dtype=F64))
    assert checker[0] == pytest.approx(-math.log(8)) and checker[1] == -math.inf and checker[2] == -math.inf
    # the mixture's density integrates to one (a grid over [−4, 4]²)
    grid = torch.stack(torch.meshgrid(torch.linspace(-4, 4, 401, dtype=F64), torch.linspace(-4, 4, 401, dtype=F64),
                                      indexing="ij"), -1).reshape(-1, 2)
    mass = toy_density("eight_gaussians").log_prob(grid).exp().sum().item() * (8 / 400) ** 2
    assert mass == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="unknown toy density"):
        toy_density("swiss_roll")


@pytest.mark.slow
def test_a_cnf_learns_eight_gaussians():
    """A few hundred Adam steps take the test NLL from the base's ~6 nats most of the way to the entropy."""
    torch.manual_seed(0)
    density = toy_density("eight_gaussians")
    generator = torch.Generator().manual_seed(0)
    train, test = density.sample(512, generator).float(), density.sample(512, generator).float()
    flow = CNF(ConcatMLP(2, (32, 32)), trace="exact", gradient="backprop", rtol=1e-3, atol=1e-3)
    optimiser = torch.optim.Adam(flow.parameters(), lr=1e-2)

    def nll(x):
        out = flow(x)
        return -(standard_normal_log_prob(out.z) + out.log_det).mean()

    with torch.no_grad():
        before = nll(test).item()
    for _ in range(150):
        optimiser.zero_grad()
        nll(train[torch.randint(0, 512, (128,))]).backward()
        optimiser.step()
    with torch.no_grad():
        after = nll(test).item()
    entropy = -density.log_prob(test.double()).mean().item()
    assert after < before - 1.0 and after > entropy - 0.1  # learned, and never below the truth


def test_squeeze_moves_each_two_by_two_block_into_channels_and_back():
    from odekit.models.cnf import squeeze, unsqueeze

    x = torch.arange(2 * 3 * 4 * 6, dtype=F64).reshape(2, 3, 4, 6)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    # channel 4c + 2i + j at (p, q) holds pixel (2p + i, 2q + j) of channel c
    assert y[1, 4 * 2 + 2 * 1 + 0, 1, 2] == x[1, 2, 3, 4]
    torch.testing.assert_close(unsqueeze(y), x)
    with pytest.raises(ValueError, match="even height and width"):
        squeeze(torch.zeros(1, 1, 3, 4))


def test_logit_transform_log_determinant_and_bits_per_dim():
    from odekit.models.cnf import bits_per_dim, dequantize, logit_transform

    x = torch.rand(3, 5, dtype=F64, requires_grad=True)
    y, log_det = logit_transform(x, alpha=0.05)
    (slopes,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the Jacobian is diagonal
    torch.testing.assert_close(log_det, slopes.log().sum(1))
    pixels = torch.randint(0, 256, (4, 1, 2, 2))
    u = dequantize(pixels, torch.Generator().manual_seed(0))
    assert ((u * 256).floor() == pixels).all()
    # the uniform density on [0, 1)^D has log p = 0: exactly 8 bits per 8-bit dimension
    assert bits_per_dim(torch.zeros(2), 784).tolist() == [8.0, 8.0]


def test_odenvp_log_likelihood_equals_the_change_of_variables_by_brute_force():
    """log p(x) of a two-scale ODENVP (exact traces) against log N(T(x)) + log|det ∂T/∂x| with the full
    Jacobian of the map x → (factored half, final z) taken by autograd through every solve."""
    from odekit.models.cnf import ODENVP, logit_transform, squeeze

    torch.manual_seed(0)
    model = ODENVP((1, 4, 4), scales=2, blocks=1, hidden=(4,), alpha=0.05, trace="exact", rtol=1e-10, atol=1e-10,
                   gradient="backprop").double()
    with torch.no_grad():  # away from the near-identity start
        for p in model.parameters():
            p.mul_(3.0)
    x = torch.rand(1, 1, 4, 4, dtype=F64) * 0.8 + 0.1

    def transform(flat):
        z, _ = logit_transform(flat.reshape(1, 1, 4, 4), 0.05)
        z = model.stages[0][0](z).z
        kept, factored = squeeze(z).chunk(2, dim=1)
        return torch.cat([model.stages[1][0](kept).z.flatten(), factored.flatten()])

    jacobian = torch.autograd.functional.jacobian(transform, x.flatten())
    expected = standard_normal_log_prob(transform(x.flatten())[None]) + torch.linalg.slogdet(jacobian)[1]
    torch.testing.assert_close(model(x), expected, rtol=1e-7, atol=1e-7)
    samples = model.sample(3, torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 4, 4) and ((samples >= 0) & (samples <= 1)).all()


def test_a_cnf_takes_settings_as_an_object_or_as_keywords():
    from odekit.solve.spec import SolveSettings

    flow = CNF(Linear(A), trace="exact", settings=SolveSettings(method="rk4", options={"step_size": 0.01}))
    out = flow(torch.ones(2, 3, dtype=F64))
    assert flow.stats.method == "rk4" and out.log_det[0].item() == pytest.approx(A.trace().item(), rel=1e-9)
    with pytest.raises(Exception, match="not both"):
        CNF(Linear(A), settings=SolveSettings(), rtol=1e-3)


def test_stacked_blocks_train_with_the_adjoint_as_with_backprop():
    """An ODENVP's second block gets an input that requires grad; under the adjoint (the original's
    gradient) its trace must still differentiate the field at that input."""
    from odekit.models.cnf import ODENVP

    x = torch.rand(2, 1, 4, 4, dtype=F64) * 0.8 + 0.1
    grads = {}
    for gradient in ("adjoint", "backprop"):
        torch.manual_seed(0)
        model = ODENVP((1, 4, 4), scales=2, blocks=2, hidden=(4,), trace="exact", rtol=1e-9, atol=1e-9,
                       gradient=gradient).double()
        model(x).sum().backward()
        grads[gradient] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads["adjoint"], grads["backprop"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_a_trainable_end_time_gets_the_closed_form_gradient(gradient):
    """T = s² learned (FFJORD's train_T): for dz/dt = A z, log p(x) = log N(e^{AT} x) + T·tr A, so
    ∂/∂s = 2s ∂/∂T with ∂/∂T = ∇ log N(z)ᵀ A z + tr A."""
    flow = CNF(Linear(A), t_end=1.2, trace="exact", train_t_end=True, rtol=1e-10, atol=1e-10,
               gradient=gradient).double()
    assert flow.t_end == pytest.approx(1.2)
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    out = flow(x)
    (standard_normal_log_prob(out.z) + out.log_det).sum().backward()
    s = flow.sqrt_t_end.item()  # √1.2 as the float32 it was created in
    z = x @ torch.from_numpy(expm(A.numpy() * s**2)).T
    d_t = (-(z * (z @ A.T)).sum(1) + A.trace()).sum()
    assert flow.sqrt_t_end.grad.item() == pytest.approx(2 * s * d_t.item(), rel=1e-7)
    assert flow(z, reverse=True).z.sub(x).abs().max() < 1e-8  # sampling runs from the learned T back to 0
