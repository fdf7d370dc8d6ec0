"""Graph datasets of chapter 4 through PyG, and the GRAND split protocol."""

import subprocess
import sys

import pytest
import torch

from odekit.data import graphs


def test_largest_connected_components_of_the_real_graphs(data_root, tmp_path):
    # node counts of the LCCs used by GRAND (Chamberlain et al. 2021, Table 5)
    expected = {"cora": (2485, 7, 1433), "citeseer": (2120, 6, 3703), "photo": (7487, 8, 745)}
    for name, (nodes, classes, features) in expected.items():
        data = graphs.load_graph(name, data_root, pyg_root=tmp_path)
        assert data.num_nodes == nodes and int(data.y.max()) + 1 == classes and data.x.shape[1] == features
        assert data.edge_index.max() < nodes


def test_split_protocol_sizes_disjointness_and_seeding():
    labels = torch.arange(3000) % 7
    assert graphs.development_size("cora") == 1500 and graphs.development_size("coauthor_cs") == 5000
    split = graphs.labelled_split(labels, per_class=5, development=1500, seed=3)
    assert int(split.train.sum()) == 35 and int(split.val.sum()) == 1465 and int(split.test.sum()) == 1500
    assert not (split.train & split.val).any() and not (split.train & split.test).any()
    assert (split.train | split.val | split.test).all()
    assert torch.bincount(labels[split.train]).tolist() == [5] * 7
    again = graphs.labelled_split(labels, per_class=5, development=1500, seed=3)
    other = graphs.labelled_split(labels, per_class=5, development=1500, seed=4)
    assert torch.equal(again.train, split.train) and not torch.equal(other.train, split.train)


def test_split_draws_are_the_authors_numpy_stream():
    # RandomState(0).choice(12, 6, replace=False) = [6, 11, 4, 10, 2, 8] is the development set;
    # the per-class draws restart RandomState(0) (data.py's set_train_val_test_split)
    split = graphs.labelled_split(torch.arange(12) % 3, per_class=1, development=6, seed=0)
    assert split.train.nonzero().flatten().tolist() == [6, 8, 10]
    assert split.val.nonzero().flatten().tolist() == [2, 4, 11]
    assert split.test.nonzero().flatten().tolist() == [0, 1, 3, 5, 7, 9]


def test_split_rejects_impossible_requests():
    labels = torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="larger than the graph"):
        graphs.labelled_split(labels, per_class=1, development=11, seed=0)
    with pytest.raises(ValueError, match="at least one labelled node"):
        graphs.labelled_split(labels, per_class=0, development=5, seed=0)


def test_missing_raw_files_are_named(data_root, tmp_path):
    assert graphs.missing("cora", data_root) == []
    # the offline copies lack PubMed's allx (see the data README); PyG downloads it with internet
    assert graphs.missing("pubmed", data_root) == [str(data_root / "planetoid" / "ind.pubmed.allx")]
    assert len(graphs.missing("cora", tmp_path)) == 8
    with pytest.raises(ValueError, match="unknown graph 'reddit'"):
        graphs.missing("reddit", data_root)


def test_rewiring_adds_two_hop_and_diffusion_edges():
    from torch_geometric.data import Data

    path = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])  # 0–1–2–3
    data = Data(x=torch.randn(4, 2), edge_index=path, num_nodes=4)
    two_hop = {tuple(e) for e in graphs.rewire(data, "two_hop").edge_index.t().tolist()}
    assert {(0, 2), (2, 0), (1, 3), (3, 1)} <= two_hop and (0, 3) not in two_hop
    gdc = graphs.rewire(data, "gdc")
    assert gdc.edge_index.shape[1] > path.shape[1] and gdc.edge_attr is None  # PPR reaches every node here
    assert torch.equal(data.edge_index, path)  # the input graph is left alone
    with pytest.raises(ValueError, match="unknown rewiring"):
        graphs.rewire(data, "knn")


def test_ogbn_arxiv_offline_says_where_to_put_it(tmp_path, monkeypatch):
    from urllib.error import URLError

    import ogb.nodeproppred

    def offline(*args, **kwargs):
        (tmp_path / "pyg" / "ogbn_arxiv").mkdir(parents=True)  # a half-written folder, as a failed download leaves
        raise URLError("no network")

    monkeypatch.setattr(ogb.nodeproppred, "PygNodePropPredDataset", offline)
    with pytest.raises(graphs.DataUnavailableError, match="could not download ogbn-arxiv.*ogbn_arxiv"):
        graphs.load_graph("ogbn_arxiv", tmp_path / "data", pyg_root=tmp_path / "pyg")
    assert not (tmp_path / "pyg" / "ogbn_arxiv").exists()  # ogb would ask on stdin about it next time
    assert graphs.missing("ogbn_arxiv", tmp_path / "data")


@pytest.mark.slow
def test_processes_building_one_fresh_cache_together_all_load_the_graph(data_root, tmp_path):
    """Two processes (as two Ray workers of a fresh run) build PyG's cache of one graph at once."""
    code = ("import sys; from pathlib import Path; from odekit.data.graphs import load_graph; "
            "print(load_graph('citeseer', Path(sys.argv[1]), Path(sys.argv[2])).num_nodes)")
    workers = [subprocess.Popen([sys.executable, "-c", code, str(data_root), str(tmp_path / "pyg")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], [err[-500:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
