"""GRAND / GRAND++ vector fields (eqs. 4.6–4.7, 4.12)."""

import pytest
import torch

import odekit
from odekit.models.graph_diffusion import EdgeAttention, GraphDiffusion, labelled_source

F64 = torch.float64
# a path 0–1–2–3 and a triangle 4–5–6, both directions
EDGES = torch.tensor([[0, 1, 1, 2, 2, 3, 4, 5, 5, 6, 6, 4], [1, 0, 2, 1, 3, 2, 5, 4, 6, 5, 4, 6]])


def _field(nonlinear=False, features=3):
    torch.manual_seed(0)
    field = GraphDiffusion(features, attention_dim=4, heads=2, nonlinear=nonlinear).double()
    with torch.no_grad():  # non-uniform attention, so the tests see real weights
        for layer in (field.attention.query, field.attention.key):
            layer.weight.normal_()
    return field


def test_attention_rows_are_stochastic_over_neighbours_and_self():
    field = _field()
    x = torch.randn(7, 3, dtype=F64)
    field.set_initial(x, EDGES)
    weights = field.weights
    sums = torch.zeros(7, dtype=F64).index_add_(0, field.edge_index[0], weights)
    torch.testing.assert_close(sums, torch.ones(7, dtype=F64))
    assert (weights > 0).all() and weights.std() > 1e-3


def test_constant_features_are_at_rest_and_diffusion_averages_each_component():
    for nonlinear in (False, True):
        field = _field(nonlinear)
        constant = torch.full((7, 3), 2.5, dtype=F64)
        field.set_initial(constant, EDGES)
        torch.testing.assert_close(field(torch.tensor(0.0), constant), torch.zeros(7, 3, dtype=F64))
        x0 = torch.randn(7, 3, dtype=F64)
        field.set_initial(x0, EDGES)
        ys = odekit.solve(field, x0, torch.tensor([0.0, 300.0], dtype=F64), rtol=1e-8, atol=1e-10).ys
        # each connected component converges to one value per feature (the over-smoothing GRAND++ fights)
        for component in (slice(0, 4), slice(4, 7)):
            assert ys[-1][component].std(dim=0).max() < 1e-6


def test_source_term_keeps_labelled_nodes_apart():
    field = _field()
    x0 = torch.randn(7, 3, dtype=F64)
    labelled = torch.tensor([True, False, False, True, True, False, False])
    source = labelled_source(x0, labelled)
    torch.testing.assert_close(source[labelled].mean(0) * 3, (x0[labelled] - x0[labelled].mean(0)).sum(0))
    assert (source[~labelled] == 0).all()
    field.set_initial(x0, EDGES, source)
    end = odekit.solve(field, x0, torch.tensor([0.0, 300.0], dtype=F64), rtol=1e-8, atol=1e-10).ys[-1]
    assert end[0:4].std(dim=0).max() > 1e-2  # no collapse to a constant on the path


def test_gradients_through_the_linear_diffusion_match_finite_differences():
    field = _field()
    x0 = torch.randn(7, 3, dtype=F64, requires_grad=True)

    def loss(x):
        field.set_initial(x, EDGES)
        return odekit.solve(field, x, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-12).ys[-1].square().sum()

    assert torch.autograd.gradcheck(loss, (x0,), eps=1e-6, atol=1e-5)


def test_every_engine_family_integrates_the_diffusion():
    field = _field()
    x0 = torch.randn(7, 3, dtype=F64)
    field.set_initial(x0, EDGES)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    reference = odekit.solve(field, x0, t, rtol=1e-10, atol=1e-12).ys[-1]
    for method, options in (("rk4", {"step_size": 0.01}), ("prox_bdf2", {"step_size": 0.01, "inner_res_tol": 1e-12})):
        y = odekit.solve(field, x0, t, method=method, options=options).ys[-1]
        assert (y - reference).abs().max() < 1e-4


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiple of heads"):
        EdgeAttention(3, 5, 2)
    with pytest.raises(ValueError, match="at least one labelled node"):
        labelled_source(torch.zeros(3, 2), torch.zeros(3, dtype=torch.bool))
    field = _field()
    with pytest.raises(RuntimeError, match="set_initial"):
        field(torch.tensor(0.0), torch.zeros(7, 3, dtype=F64))
