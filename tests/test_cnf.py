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
