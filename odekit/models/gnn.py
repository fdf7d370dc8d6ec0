"""Discrete-depth GNN baselines of chapter 4 (Tables 4.1, 4.3): GCN, GAT, GraphSAGE and MoNet.

PyTorch Geometric's implementations with the depth (number of message-passing layers) as a
parameter; with ``depth = 1`` a single layer maps features to classes. MoNet uses PyG's
``GMMConv`` with the pseudo-coordinates of Monti et al. for citation graphs,
``(1/√deg(i), 1/√deg(j))`` per edge.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GMMConv
from torch_geometric.nn.models import GAT, GCN, GraphSAGE
from torch_geometric.nn.models.basic_gnn import BasicGNN
from torch_geometric.utils import degree

from .sparse_input import SparseInputDropout


class _MoNetStack(BasicGNN):
    supports_edge_weight = False
    supports_edge_attr = True
    supports_norm_batch = False

    def init_conv(self, in_channels: int, out_channels: int, **kwargs) -> GMMConv:
        return GMMConv(in_channels, out_channels, dim=2, kernel_size=kwargs.pop("kernel_size", 3), **kwargs)


BASELINES = {"gcn": "GCN", "gat": "GAT", "sage": "GraphSAGE", "monet": "MoNet"}


class GNNClassifier(nn.Module):
    """A baseline GNN node classifier ``f(x, edge_index) → class scores``.

    Args:
        kind: ``gcn``, ``gat``, ``sage`` or ``monet``.
        depth: number of message-passing layers (the "depth" of Table 4.1).
        hidden: hidden width (for GAT the concatenation of ``heads`` heads).
        dropout: dropout between layers (and on the input, as the reference implementations).
    """

    def __init__(self, kind: str, in_features: int, classes: int, *, depth: int = 2, hidden: int = 64,
                 dropout: float = 0.5, heads: int = 8) -> None:
        super().__init__()
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1 layer, got {depth}")
        self.kind, self.depth, self.input_dropout = kind, depth, dropout
        self._dropout = SparseInputDropout()
        common = dict(in_channels=in_features, hidden_channels=hidden, num_layers=depth, out_channels=classes,
                      dropout=dropout)
        if kind == "gcn":
            self.net = GCN(**common)
        elif kind == "gat":
            self.net = GAT(**common, heads=heads)
        elif kind == "sage":
            self.net = GraphSAGE(**common)
        else:
            self.net = _MoNetStack(**common)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        dropped = self._dropout(x, self.input_dropout, self.training)
        # densifying the dropped sparse input is far cheaper than a dense dropout of bag-of-words features
        x = nn.functional.dropout(x, self.input_dropout, self.training) if dropped is None else dropped.to_dense()
        if self.kind != "monet":
            return self.net(x, edge_index)
        deg = degree(edge_index[1], x.shape[0], dtype=x.dtype).clamp(min=1).rsqrt()
        pseudo = torch.stack([deg[edge_index[0]], deg[edge_index[1]]], dim=1)
        return self.net(x, edge_index, edge_attr=pseudo)
