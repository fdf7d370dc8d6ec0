"""GRAND / GRAND++ vector fields (eqs. 4.6–4.7, 4.12)."""

import pytest
import torch

import odekit
from odekit.models.graph_diffusion import EdgeAttention, GraphDiffusion, labelled_source, mass_shifted_initial

F64 = torch.float64
# a path 0–1–2–3 and a triangle 4–5–6, both directions
EDGES = torch.tensor([[0, 1, 1, 2, 2, 3, 4, 5, 5, 6, 6, 4], [1, 0, 2, 1, 3, 2, 5, 4, 6, 5, 4, 6]])


def _field(nonlinear=False, features=3, normalise="rows"):
    torch.manual_seed(0)
    field = GraphDiffusion(features, attention_dim=4, heads=2, nonlinear=nonlinear, normalise=normalise).double()
    with torch.no_grad():  # non-uniform attention, so the tests see real weights
        for layer in (field.attention.query, field.attention.key):
            layer.weight.normal_()
    return field


def test_attention_rows_are_stochastic_over_neighbours_and_self():
    field = _field()
    x = torch.randn(7, 3, dtype=F64)
    inputs = field.prepare(x, EDGES)
    weights = inputs.weights
    sums = torch.zeros(7, dtype=F64).index_add_(0, inputs.edge_index[0], weights)
    torch.testing.assert_close(sums, torch.ones(7, dtype=F64))
    assert (weights > 0).all() and weights.std() > 1e-3


def test_column_normalised_attention_conserves_each_features_total():
    for nonlinear in (False, True):
        field = _field(nonlinear, normalise="columns")
        x0 = torch.randn(7, 3, dtype=F64)
        inputs = field.prepare(x0, EDGES)
        sums = torch.zeros(7, dtype=F64).index_add_(0, inputs.edge_index[1], field.attention(x0, inputs.edge_index))
        torch.testing.assert_close(sums, torch.ones(7, dtype=F64))
        ys = odekit.solve(field, x0, torch.tensor([0.0, 5.0, 300.0], dtype=F64), rtol=1e-9, atol=1e-11,
                          args=inputs).ys
        for component in (slice(0, 4), slice(4, 7)):
            torch.testing.assert_close(ys[1][component].sum(0), x0[component].sum(0))
            torch.testing.assert_close(ys[2][component].sum(0), x0[component].sum(0))


def test_zero_sum_source_has_a_bounded_steady_state_only_in_the_conservative_form():
    # GRAND++'s source sums to zero over the nodes (§4.5.2): with column-normalised attention the
    # features settle; with row-normalised attention the degree-weighted mean drifts linearly
    x0 = torch.randn(7, 3, dtype=F64)
    labelled = torch.tensor([True, True, False, True, False, False, False])  # the source sums to zero on the path
    t = torch.tensor([0.0, 200.0, 400.0], dtype=F64)
    drift = {}
    for normalise in ("columns", "rows"):
        field = _field(normalise=normalise)
        inputs = field.prepare(x0, EDGES, labelled_source(x0, labelled))
        ys = odekit.solve(field, x0, t, rtol=1e-9, atol=1e-11, args=inputs).ys
        drift[normalise] = (ys[2] - ys[1]).abs().max().item()
    assert drift["columns"] < 1e-5 and drift["rows"] > 1e-1


def test_attention_with_the_authors_initialisation_learns():
    # query/key weights start at 1e-5 (near-uniform attention) but the biases at PyTorch's default:
    # the map on the side that varies within a softmax group (keys for rows, queries for columns)
    # gets an O(1) gradient; with zero biases both would stay ~1e-5
    x = torch.randn(7, 3, dtype=F64)
    edges = torch.cat([EDGES, torch.arange(7).repeat(2, 1)], dim=1)
    target = torch.rand(edges.shape[1], dtype=F64)
    for normalise, group, learner in (("rows", 0, "key"), ("columns", 1, "query")):
        torch.manual_seed(0)
        attention = EdgeAttention(3, 4, 2, normalise).double()
        weights = attention(x, edges)
        uniform = 1.0 / torch.bincount(edges[group]).to(F64)[edges[group]]
        torch.testing.assert_close(weights, uniform, atol=1e-4, rtol=0)
        (weights * target).sum().backward()
        assert getattr(attention, learner).weight.grad.abs().max() > 1e-3


def test_constant_features_are_at_rest_and_diffusion_averages_each_component():
    for nonlinear in (False, True):
        field = _field(nonlinear)
        constant = torch.full((7, 3), 2.5, dtype=F64)
        at_rest = field(torch.tensor(0.0), constant, field.prepare(constant, EDGES))
        torch.testing.assert_close(at_rest, torch.zeros(7, 3, dtype=F64))
        x0 = torch.randn(7, 3, dtype=F64)
        ys = odekit.solve(field, x0, torch.tensor([0.0, 300.0], dtype=F64), rtol=1e-8, atol=1e-10,
                          args=field.prepare(x0, EDGES)).ys
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
    end = odekit.solve(field, x0, torch.tensor([0.0, 300.0], dtype=F64), rtol=1e-8, atol=1e-10,
                       args=field.prepare(x0, EDGES, source)).ys[-1]
    assert end[0:4].std(dim=0).max() > 1e-2  # no collapse to a constant on the path


def test_mass_shifted_initial_condition_meets_eq_4_11():
    x = torch.randn(7, 3, dtype=F64)
    labelled = torch.tensor([True, False, True, False, False, True, False])
    degree = torch.tensor([2, 3, 3, 2, 3, 3, 3])  # neighbours + the self-loop
    field = _field()
    assert torch.equal(field.graph(EDGES, 7).degrees, degree)
    z0 = mass_shifted_initial(x, labelled, degree)
    x_hat = x[labelled].mean(0)
    torch.testing.assert_close(z0.sum(0), ((x[labelled] - x_hat) / degree[labelled, None].to(F64)).sum(0))
    shift = x - z0
    torch.testing.assert_close(shift, shift[:1].expand_as(shift))  # one constant for every node


def test_gradients_through_the_linear_diffusion_match_finite_differences():
    field = _field()
    x0 = torch.randn(7, 3, dtype=F64, requires_grad=True)

    def loss(x):
        return odekit.solve(field, x, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-12,
                            args=field.prepare(x, EDGES)).ys[-1].square().sum()

    assert torch.autograd.gradcheck(loss, (x0,), eps=1e-6, atol=1e-5)


def test_every_engine_family_integrates_the_diffusion():
    field = _field()
    x0 = torch.randn(7, 3, dtype=F64)
    inputs = field.prepare(x0, EDGES)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    reference = odekit.solve(field, x0, t, rtol=1e-10, atol=1e-12, args=inputs).ys[-1]
    for method, options in (("rk4", {"step_size": 0.01}), ("prox_bdf2", {"step_size": 0.01, "inner_res_tol": 1e-12})):
        y = odekit.solve(field, x0, t, method=method, options=options, args=inputs).ys[-1]
        assert (y - reference).abs().max() < 1e-4


def test_edge_sampling_trains_on_the_strongest_edges_renormalised_and_evaluates_on_all():
    for normalise, group in (("rows", 0), ("columns", 1)):
        field = GraphDiffusion(3, attention_dim=4, heads=2, normalise=normalise, edge_sampling=0.6).double()
        with torch.no_grad():
            for layer in (field.attention.query, field.attention.key):
                layer.weight.normal_()
        x0 = torch.randn(7, 3, dtype=F64)
        full = field.graph(EDGES, 7).edge_index
        weights = field.attention(x0, full)
        inputs = field.prepare(x0, EDGES)  # training mode: sampled
        strongest = set(map(tuple, full[:, weights > weights.quantile(0.4)].t().tolist()))
        assert set(map(tuple, inputs.edge_index.t().tolist())) == strongest and len(strongest) < full.shape[1]
        groups = torch.unique(inputs.edge_index[group])
        sums = torch.zeros(7, dtype=F64).index_add_(0, inputs.edge_index[group], inputs.weights)
        torch.testing.assert_close(sums[groups], torch.ones_like(sums[groups]))
        # the kept weights are constants (the authors compute them without gradient)
        odekit.solve(field, x0, torch.tensor([0.0, 1.0], dtype=F64), args=inputs).ys[-1].square().sum().backward()
        assert field.alpha.grad is not None and field.attention.query.weight.grad is None
        field.eval()
        inputs = field.prepare(x0, EDGES)
        assert torch.equal(inputs.edge_index, full) and torch.allclose(inputs.weights, weights)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        GraphDiffusion(3, edge_sampling=1.0)
    with pytest.raises(ValueError, match="nonlinear=False"):
        GraphDiffusion(3, nonlinear=True, edge_sampling=0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiple of heads"):
        EdgeAttention(3, 5, 2)
    with pytest.raises(ValueError, match="normalise must be one of"):
        EdgeAttention(3, 4, 2, normalise="both")
    with pytest.raises(ValueError, match="at least one labelled node"):
        labelled_source(torch.zeros(3, 2), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one labelled node"):
        mass_shifted_initial(torch.zeros(7, 2), torch.zeros(7, dtype=torch.bool), torch.ones(7))
    field = _field()
    with pytest.raises(TypeError, match="args=field.prepare"):
        field(torch.tensor(0.0), torch.zeros(7, 3, dtype=F64), None)
    cached = GraphDiffusion(3, cached=True)
    assert cached.graph(EDGES, 7) is cached.graph(EDGES[:, :4], 7)  # the first graph, as PyG's cached=True
    with pytest.raises(ValueError, match="cached=False"):
        cached.graph(EDGES, 8)
