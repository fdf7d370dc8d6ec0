"""Graph neural diffusion (GRAND, eqs. 4.6–4.7) and its source term (GRAND++, eq. 4.12) as vector fields.

``dX/dt = σ(α)·(A(X) X − X) + C``: node features diffuse along the edges with attention weights
``A`` (each node's incoming weights sum to one, so a constant signal is at rest), and GRAND++ adds
a constant source ``C`` at the labelled nodes so that the features do not all collapse to one
value as ``t`` grows. ``A`` is computed once from ``X(0)`` (GRAND-l) or from ``X(t)`` at every
evaluation (GRAND-nl). The fields are ``nn.Module``\\ s for :func:`odekit.solve`, so every engine
method (explicit or proximal) and either gradient mode applies.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import add_self_loops, scatter, softmax


class EdgeAttention(nn.Module):
    """Multi-head scaled dot-product attention on the edges (eq. 4.7), averaged over heads.

    ``a_ij = softmax_j(⟨W_K x_i, W_Q x_j⟩ / √d_k)`` over the neighbours ``j`` of each node ``i``
    (self-loops included), so ``Σ_j a_ij = 1``. The key and query maps start at a small constant,
    as the authors' code does, which makes the first attention nearly uniform.
    """

    def __init__(self, features: int, attention_dim: int, heads: int, init: float = 1e-5) -> None:
        super().__init__()
        if attention_dim % heads:
            raise ValueError(f"attention_dim={attention_dim} must be a multiple of heads={heads}")
        self.heads, self.head_dim = heads, attention_dim // heads
        self.query = nn.Linear(features, attention_dim)
        self.key = nn.Linear(features, attention_dim)
        for layer in (self.query, self.key):
            nn.init.constant_(layer.weight, init)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Edge weights (one per column of ``edge_index``, rows = receiving nodes)."""
        target, source = edge_index
        q = self.query(x).view(-1, self.heads, self.head_dim)
        k = self.key(x).view(-1, self.heads, self.head_dim)
        scores = (k[target] * q[source]).sum(-1) / math.sqrt(self.head_dim)
        return softmax(scores, target, num_nodes=x.shape[0]).mean(dim=1)


class GraphDiffusion(nn.Module):
    """The GRAND / GRAND++ vector field on node features ``X`` (nodes × features).

    Args:
        features: width of ``X``.
        edge_index: the graph (PyG layout); self-loops are added.
        attention_dim, heads: sizes of :class:`EdgeAttention`.
        nonlinear: recompute the attention from ``X(t)`` at every evaluation (GRAND-nl) instead of
            once from ``X(0)`` by :meth:`set_initial` (GRAND-l).

    ``source`` (nodes × features, zero by default) is GRAND++'s ``C`` of eq. 4.12.
    """

    def __init__(self, features: int, edge_index: torch.Tensor, attention_dim: int = 16, heads: int = 1,
                 nonlinear: bool = False) -> None:
        super().__init__()
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
        self.register_buffer("edge_index", add_self_loops(edge_index, num_nodes=num_nodes)[0])
        self.attention = EdgeAttention(features, attention_dim, heads)
        self.alpha = nn.Parameter(torch.zeros(()))  # σ(0) = 0.5, as the authors initialise it
        self.nonlinear = nonlinear
        self.weights: torch.Tensor | None = None
        self.source: torch.Tensor | None = None

    def set_initial(self, x0: torch.Tensor, source: torch.Tensor | None = None) -> None:
        """Fix the attention from ``X(0)`` (GRAND-l) and the source term for the next solves."""
        self.weights = None if self.nonlinear else self.attention(x0, self.edge_index)
        self.source = source

    def diffuse(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``A X``: the attention-weighted average of each node's neighbours."""
        target, source = self.edge_index
        return scatter(weights[:, None] * x[source], target, dim=0, dim_size=x.shape[0], reduce="sum")

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        weights = self.attention(x, self.edge_index) if self.nonlinear else self.weights
        if weights is None:
            raise RuntimeError("call set_initial(x0) before integrating a linear (GRAND-l) diffusion")
        out = torch.sigmoid(self.alpha) * (self.diffuse(x, weights) - x)
        return out if self.source is None else out + self.source


def labelled_source(x: torch.Tensor, labelled: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """GRAND++'s source (REFERENCE.md §2b): ``scale·(x_i − x̄)`` at labelled nodes ``i``, 0 elsewhere.

    ``x̄`` is the mean of the features over the labelled nodes.
    """
    if labelled.dtype != torch.bool or labelled.shape != x.shape[:1]:
        raise ValueError("labelled must be a boolean mask with one entry per node")
    if not labelled.any():
        raise ValueError("GRAND++ needs at least one labelled node for its source term")
    centred = x - x[labelled].mean(dim=0, keepdim=True)
    return scale * centred * labelled[:, None].to(x.dtype)
