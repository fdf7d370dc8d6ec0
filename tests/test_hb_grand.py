"""Heavy-ball graph diffusion (HB-GRAND): the linear theory checked numerically, and the model end to end."""

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from odekit import solve
from odekit.models.dynamics import hbnode
from odekit.models.grand import GRAND
from odekit.models.graph_diffusion import GraphDiffusion, dirichlet_energy

F64 = torch.float64


def _graph() -> torch.Tensor:
    """A 7-node ring with two chords, both directions of every edge (PyG's convention)."""
    pairs = [(i, (i + 1) % 7) for i in range(7)] + [(0, 3), (2, 5)]
    return torch.tensor(pairs + [(j, i) for i, j in pairs]).T


def _linear_diffusion(features: int = 2):
    """GRAND-l's field on the small graph with the attention fixed at uniform weights (rows sum to one)."""
    torch.manual_seed(0)
    field = GraphDiffusion(features, attention_dim=2, normalise="rows").double()
    with torch.no_grad():
        for layer in (field.attention.query, field.attention.key):
            layer.weight.zero_()
            layer.bias.zero_()
    x0 = torch.randn(7, features, dtype=F64)
    inputs = field.prepare(x0, _graph())
    rate = torch.sigmoid(field.alpha).item()
    a = inputs.graph.matrix(inputs.weights).to_dense()
    return field, inputs, x0, (rate * (a - torch.eye(7, dtype=F64))).detach()  # L = σ(α)(A − I)


def _sorted(values: np.ndarray) -> np.ndarray:
    """Eigenvalues in an order that round-off cannot shuffle (equal real parts are common here)."""
    return np.array(sorted(values, key=lambda z: (round(z.real, 8), round(z.imag, 8))))


def test_the_heavy_ball_spectrum_is_the_damped_wave_equations():
    """Each diffusion mode −λ gives s² + γs + λ = 0; underdamped ones decay at γ/2, not at λ."""
    field, inputs, x0, laplacian = _linear_diffusion(features=1)
    gamma = 0.5
    heavy = hbnode(field, gamma=gamma, learn_gamma=False, epsilon=2.0)
    zero = (torch.zeros_like(x0), torch.zeros_like(x0))

    def flat_field(z):
        h, m = z[:7, None], z[7:, None]
        dh, dm = heavy(torch.tensor(0.0), (h, m), inputs)
        return torch.cat([dh[:, 0], dm[:, 0]])

    jacobian = torch.autograd.functional.jacobian(flat_field, torch.cat([zero[0][:, 0], zero[1][:, 0]]))
    measured = _sorted(np.linalg.eigvals(jacobian.numpy()))
    rates = -np.linalg.eigvals(laplacian.numpy()).real  # λ ≥ 0, real (A is similar to a symmetric matrix)
    predicted = _sorted(np.concatenate([(-gamma + np.sqrt(gamma**2 - 4 * rates + 0j)) / 2,
                                        (-gamma - np.sqrt(gamma**2 - 4 * rates + 0j)) / 2]))
    np.testing.assert_allclose(measured, predicted, atol=1e-10)
    underdamped = rates > gamma**2 / 4
    assert underdamped.sum() >= 5  # most modes of this graph
    assert np.allclose(measured[np.abs(measured.imag) > 1e-9].real, -gamma / 2)


def test_consensus_at_rest_is_a_rest_state():
    field, inputs, x0, _ = _linear_diffusion()
    heavy = hbnode(field, gamma=0.5, learn_gamma=False, epsilon=2.0)
    constant = torch.ones_like(x0) * torch.tensor([1.5, -2.0], dtype=F64)
    dh, dm = heavy(torch.tensor(0.0), (constant, torch.zeros_like(constant)), inputs)
    assert dh.abs().max() == 0 and dm.abs().max() < 1e-14


def test_dirichlet_energy_by_hand():
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # the path 0 – 1 – 2, both directions
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert dirichlet_energy(x, edges).item() == pytest.approx((1 + 1 + 4 + 4) / 6)
    stacked = torch.stack([x, 2 * x])  # one energy per time
    torch.testing.assert_close(dirichlet_energy(stacked, edges), torch.tensor([10 / 6, 40 / 6]))


@pytest.mark.parametrize("gamma,heavy_ball_keeps_more", [(0.5, False), (1.9, True)])
def test_energy_over_time_matches_the_exact_solution_and_the_spectrum(gamma, heavy_ball_keeps_more):
    """X'' + γX' = LX solved by odekit equals expm of the block matrix, and which model keeps more
    Dirichlet energy at large t is the one whose slowest non-consensus mode decays more slowly:
    λ₂ for GRAND, min over modes of −Re(s) for the heavy ball. Light damping *accelerates* the
    slow modes (λ/γ > λ for γ < 1), so the heavy ball avoids over-smoothing only when damped enough."""
    field, inputs, x0, laplacian = _linear_diffusion()
    heavy = hbnode(field, gamma=gamma, learn_gamma=False, epsilon=2.0)
    t = torch.linspace(0, 40, 41, dtype=F64)
    with torch.no_grad():
        grand = solve(field, x0, t, args=inputs, rtol=1e-10, atol=1e-12).ys
        hb = solve(heavy, (x0, torch.zeros_like(x0)), t, args=inputs, rtol=1e-10, atol=1e-12).ys[0]
    n, lap = 7, laplacian.numpy()
    block = np.block([[np.zeros((n, n)), np.eye(n)], [lap, -gamma * np.eye(n)]])
    start = np.concatenate([x0.numpy(), np.zeros_like(x0.numpy())])
    np.testing.assert_allclose(hb.numpy(), np.stack([(expm(block * s) @ start)[:n] for s in t.numpy()]), atol=1e-7)
    np.testing.assert_allclose(grand.numpy(), np.stack([expm(lap * s) @ x0.numpy() for s in t.numpy()]), atol=1e-7)
    rates = np.sort(-np.linalg.eigvals(lap).real)[1:]  # without the consensus mode (rate 0, no energy)
    heavy_rates = [-((-gamma + np.sqrt(gamma**2 - 4 * r + 0j)) / 2).real for r in rates]
    assert (min(heavy_rates) < rates[0]) == heavy_ball_keeps_more
    edges = _graph()
    assert (dirichlet_energy(hb[-1], edges) > dirichlet_energy(grand[-1], edges)) == heavy_ball_keeps_more


@pytest.mark.parametrize("heavy_ball,velocity,gradient", [("hb", "zero", "backprop"), ("ghb", "learned", "adjoint"),
                                                           ("hb", "learned", "adjoint")])
def test_hb_grand_trains_and_its_gradients_match_finite_differences(heavy_ball, velocity, gradient):
    torch.manual_seed(0)
    x = torch.randn(7, 5, dtype=F64)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    net = GRAND(5, 2, hidden=4, t_end=3.0, source=True, heavy_ball=heavy_ball, initial_velocity=velocity,
                input_dropout=0.0, method="dopri5", rtol=1e-10, atol=1e-10, gradient=gradient).double()
    net.set_source_nodes(torch.tensor([0, 1]))
    with torch.no_grad():  # away from the zero start, so every parameter matters
        if net.velocity is not None:
            net.velocity.weight.normal_(0, 0.3)
    loss = torch.nn.functional.cross_entropy(net(x, _graph()), labels)
    loss.backward()
    assert net.stats.nfe > 0 and net.stats.nfe_backward > 0
    for name, parameter in (("omega", net.heavy.omega), ("encoder", net.encoder.weight)):
        index = (0,) * parameter.ndim
        eps = 1e-6
        with torch.no_grad():
            parameter[index] += eps
            up = torch.nn.functional.cross_entropy(net(x, _graph()), labels).item()
            parameter[index] -= 2 * eps
            down = torch.nn.functional.cross_entropy(net(x, _graph()), labels).item()
            parameter[index] += eps
        assert parameter.grad[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-9), name


def test_hb_grand_rejects_bad_settings():
    with pytest.raises(ValueError, match="heavy_ball must be None or one of"):
        GRAND(5, 2, heavy_ball="second-order")
    with pytest.raises(ValueError, match="initial_velocity must be one of"):
        GRAND(5, 2, heavy_ball="hb", initial_velocity="random")
    with pytest.raises(ValueError, match="gamma must lie in"):
        GRAND(5, 2, heavy_ball="hb", damping=2.5)
