"""GRAND / GRAND++ classifiers (§4.2–4.4), the GNN baselines, and the node-classification runner."""

import pytest
import torch
import torch.nn.functional as F

from odekit.experiments import node_settings as ns
from odekit.experiments import node_trainer as nt
from odekit.models.gnn import GNNClassifier
from odekit.models.grand import GRAND
from odekit.models.graph_diffusion import Adjacency, _WeightedPropagation
from odekit.solve import MaxStepsExceededError

F64 = torch.float64
N = 24


def _graph(seed=0):
    g = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, N, (2, 70), generator=g)
    return torch.cat([edges, edges.flip(0)], dim=1), torch.randn(N, 5, dtype=F64, generator=g), torch.arange(N) % 3


def _grand(gradient, **kw):
    torch.manual_seed(1)
    model = GRAND(5, 3, hidden=4, t_end=1.5, attention_dim=4, heads=2, input_dropout=0.0, dropout=0.0, rtol=1e-10,
                  atol=1e-10, gradient=gradient, **kw).double()
    with torch.no_grad():  # away from the near-uniform initial attention, so its gradients matter
        for layer in (model.field.attention.query, model.field.attention.key):
            layer.weight.normal_()
        if model.field.beta is not None:
            model.field.beta.fill_(0.3)
    model.set_source_nodes(torch.arange(N) < 6)
    return model


def test_weighted_propagation_gradients_match_finite_differences():
    edge_index, x, _ = _graph()
    adjacency = Adjacency(edge_index, N)
    weights = torch.rand(adjacency.edge_index.shape[1], dtype=F64, requires_grad=True)
    x = x.requires_grad_()
    assert torch.autograd.gradcheck(lambda w, y: _WeightedPropagation.apply(w, y, adjacency), (weights, x))
    dense = torch.zeros(N, N, dtype=F64)
    dense[adjacency.edge_index[0], adjacency.edge_index[1]] = weights.detach()
    torch.testing.assert_close(_WeightedPropagation.apply(weights, x, adjacency), dense @ x)


@pytest.mark.parametrize("kw", [{"initial_term": True}, {"source": True}, {"nonlinear": True, "source": True},
                                {"source": True, "initial_condition": "plus_source"}])
def test_adjoint_gradients_match_backprop_for_every_parameter(kw):
    edge_index, x, y = _graph()
    grads = {}
    for gradient in ("backprop", "adjoint"):
        model = _grand(gradient, **kw)
        F.cross_entropy(model(x, edge_index), y).backward()
        grads[gradient] = {n: p.grad for n, p in model.named_parameters()}
    for name, g in grads["backprop"].items():
        assert g is not None and g.abs().max() > 0, name
        torch.testing.assert_close(grads["adjoint"][name], g, rtol=1e-6, atol=1e-9, msg=name)


def test_source_shifts_the_initial_state_and_needs_source_nodes():
    edge_index, x, _ = _graph()
    model = _grand("backprop", source=True)
    model.source_nodes = None
    with pytest.raises(RuntimeError, match="set_source_nodes"):
        model(x, edge_index)
    with pytest.raises(ValueError, match="boolean node mask or a 1-D tensor of node indices"):
        model.set_source_nodes(torch.ones(3))
    with pytest.raises(RuntimeError, match="indices must lie in"):
        model(x, edge_index, source_nodes=torch.tensor([0, x.shape[0]]))


def test_source_nodes_as_index_or_mask_per_call_or_stored_agree():
    edge_index, x, _ = _graph()
    model = _grand("backprop", source=True).eval()
    mask = torch.zeros(x.shape[0], dtype=torch.bool)
    mask[[1, 4, 7]] = True
    model.set_source_nodes(mask)
    stored = model(x, edge_index)
    by_index = model(x, edge_index, source_nodes=torch.tensor([1, 4, 7]))
    model.set_source_nodes(torch.tensor([7, 1, 4]))
    torch.testing.assert_close(by_index, stored, rtol=0, atol=0)
    torch.testing.assert_close(model(x, edge_index), stored, rtol=0, atol=0)
    with pytest.raises(ValueError, match="initial_condition must be one of"):
        GRAND(5, 3, source=True, initial_condition="zeros")


def test_outputs_at_several_times_match_separate_solves():
    edge_index, x, _ = _graph()
    model = _grand("backprop", source=True).eval()
    times = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    stacked = model(x, edge_index, times=times)
    assert stacked.shape == (3, N, 3)
    torch.testing.assert_close(stacked[-1], model(x, edge_index), rtol=1e-6, atol=1e-8)


def test_nfe_cap_raises_and_the_runner_records_it_as_na():
    edge_index, x, y = _graph()
    model = GRAND(5, 3, hidden=4, t_end=50.0, max_nfe=10).double()
    with pytest.raises(MaxStepsExceededError):
        model(x, edge_index)


def test_every_engine_family_trains_grand():
    edge_index, x, y = _graph()
    for method, options in (("rk4", {"step_size": 0.25}), ("prox_bdf2", {"step_size": 0.25})):
        model = GRAND(5, 3, hidden=4, t_end=1.0, method=method, options=options, input_dropout=0.0).double()
        loss = F.cross_entropy(model(x, edge_index), y)
        loss.backward()
        assert torch.isfinite(loss) and model.encoder.weight.grad.abs().max() > 0


@pytest.mark.parametrize("kind", ["gcn", "gat", "sage", "monet"])
def test_baselines_have_the_requested_depth(kind):
    edge_index, x, _ = _graph()
    net = GNNClassifier(kind, 5, 3, depth=3, hidden=8, heads=2).double()
    assert len(net.net.convs) == 3 and net(x, edge_index).shape == (N, 3)
    with pytest.raises(ValueError, match="unknown baseline"):
        GNNClassifier("mlp", 5, 3)


def test_config_errors_name_the_choices():
    config = ns.NodeClassificationConfig(datasets=("reddit",))
    with pytest.raises(ValueError, match="unknown dataset"):
        ns.check_config(config, ("grand-l",))
    with pytest.raises(ValueError, match="unknown model"):
        ns.check_config(ns.NodeClassificationConfig(), ("grand-xl",))
    with pytest.raises(ValueError, match="unknown method"):
        ns.check_config(ns.NodeClassificationConfig(method="euler2"), ("grand-l",))
    with pytest.raises(ValueError, match="initial_condition must be one of"):
        ns.check_config(ns.NodeClassificationConfig(initial_condition="zero"), ("grand++-l",))


def test_authors_settings_pick_the_adjoint_where_they_did():
    cora = nt.build_model(ns.NodeClassificationConfig(), "cora", "grand-l", None, 2, 10, 7)
    cs = nt.build_model(ns.NodeClassificationConfig(), "coauthor_cs", "grand++-l", None, 2, 10, 15)
    assert cora.block.gradient == "backprop" and cora.field.beta is not None and cora.t_end == 18.2948
    assert cs.block.gradient == "adjoint" and cs.block.adjoint_method == "dopri5" and cs.source
    assert cs.block.atol == pytest.approx(9348.98e-7) and cs.block.adjoint_atol == pytest.approx(6599.13e-7)
    # attention_norm_idx 1 (outgoing edges) on Cora and Coauthor CS, 0 (incoming) on PubMed
    pubmed = nt.build_model(ns.NodeClassificationConfig(), "pubmed", "grand-l", None, 2, 10, 3)
    assert (cora.field.attention.normalise, cs.field.attention.normalise) == ("columns", "columns")
    assert pubmed.field.attention.normalise == "rows"
    # GRAND++ runs take run_GNP.py's own epochs and NFE cap; GRAND keeps best_params'
    config = ns.NodeClassificationConfig()
    assert nt._optimizer(config, "citeseer", "grand++-l", cora)[1] == ns.GRANDPP_EPOCHS == 100
    assert nt._optimizer(config, "citeseer", "grand-l", cora)[1] == 250
    assert cs.block.options["max_nfe"] == ns.GRANDPP_MAX_NFE and cora.block.options["max_nfe"] == 2000
    # hard attention (att_samp_pct) where the authors' block is hard_attention, for the linear models
    photo, photo_nl = (nt.build_model(config, "photo", m, None, 2, 10, 8) for m in ("grand-l", "grand-nl"))
    assert (photo.field.edge_sampling, photo_nl.field.edge_sampling, cora.field.edge_sampling) == (0.9282, None, None)


def test_train_cell_on_cora_with_both_source_choices(data_root):
    config = ns.NodeClassificationConfig(epochs=3, time_points=4, time_scan="every_epoch")
    data = nt.GraphCache(data_root, float64=False).get("cora")
    split = nt.split_for("cora", data, 2, run=1)
    reference = nt.split_for("cora", data, 2, run=ns.FIXED_SPLIT_SEED).train
    assert not torch.equal(split.train, reference) and int(reference.sum()) == 14
    for mask in (None, reference):
        result = nt.train_cell(config, "cora", data, split, "grand++-l", seed=0, t_end=2.0, source_mask=mask)
        assert result.status == "ok" and 0.0 < result.test <= 1.0 and 0 < result.best_time <= 6.0
        assert result.nfe_forward > 0 and result.nfe_backward == result.nfe_forward
    capped = ns.NodeClassificationConfig(epochs=2, max_nfe=5)
    failed = nt.train_cell(capped, "cora", data, split, "grand-l", seed=0)
    assert failed.test is None and failed.status.startswith("solver failed: MaxStepsExceededError")


def test_sparse_input_dropout_equals_dense_dropout_on_the_non_zeros():
    from odekit.models.sparse_input import SparseInputDropout

    x = (torch.rand(40, 30) < 0.05) * torch.rand(40, 30)
    dropout = SparseInputDropout()
    torch.testing.assert_close(dropout(x, 0.5, training=False).to_dense(), x)
    dropped = dropout(x, 0.5, training=True).to_dense()
    kept = dropped != 0
    assert not (kept & (x == 0)).any() and 0 < int(kept.sum()) < int((x != 0).sum())
    torch.testing.assert_close(dropped[kept], 2 * x[kept])
    assert dropout(torch.rand(5, 5) + 0.1, 0.5, training=True) is None  # dense input: the caller's dropout
    model = GRAND(30, 3, hidden=4, input_dropout=0.0).eval()
    torch.testing.assert_close(model.encode(x), model.encoder(x))


def test_cached_sparse_layouts_follow_in_place_edits():
    edge_index, x, y = _graph()
    model = _grand("backprop").eval()
    features = (torch.rand(N, 5) < 0.05).double()
    before = model(features, edge_index)
    features.mul_(2.0)  # same storage, new values
    model_fresh = _grand("backprop").eval()
    torch.testing.assert_close(model(features, edge_index), model_fresh(features, edge_index))
    assert not torch.allclose(before, model(features, edge_index))


def test_cached_inputs_are_opt_in_and_refuse_another_shape():
    from odekit.models.sparse_input import SparseInputDropout

    x = (torch.rand(40, 30) < 0.05) * torch.rand(40, 30)
    dropout = SparseInputDropout(cached=True)
    first = dropout(x, 0.0, training=False).to_dense()
    x.mul_(2.0)  # the promise of cached=True: the input does not change
    torch.testing.assert_close(dropout(x, 0.0, training=False).to_dense(), first)
    with pytest.raises(ValueError, match="cached=False"):
        dropout(torch.zeros(41, 30), 0.0, training=False)
