"""Graph neural diffusion (GRAND, eqs. 4.6–4.7) and its source term (GRAND++, eq. 4.12) as vector fields.

``dX/dt = σ(α)·(A(X) X − X) + C``: node features diffuse along the edges with attention weights
``A``, and GRAND++ adds a constant source ``C`` at the labelled nodes so that the features do not
all collapse to one value as ``t`` grows. ``A`` is normalised either over each node's incoming
edges (rows sum to one: a constant signal is at rest) or over its outgoing edges (columns sum to
one: the total of each feature over the nodes is conserved, the random-walk form of §4.5.2 in
which GRAND++'s zero-sum source has a bounded steady state); the authors' settings use rows on
PubMed, Computers, Photo and ogbn-arxiv and columns on Cora, CiteSeer and Coauthor CS. ``A`` is
computed once from ``X(0)`` (GRAND-l) or from ``X(t)`` at every evaluation (GRAND-nl). The fields
are ``nn.Module``\\ s for :func:`odekit.solve`, so every engine method (explicit or proximal) and
either gradient mode applies.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch import nn
from torch_geometric.utils import add_self_loops, coalesce, softmax


class Adjacency:
    """The sparsity pattern of a graph with self-loops, in the layouts the products below need.

    Edges are sorted by (receiving node, sending node), so one vector of edge weights is at once
    the values of ``A`` in compressed-row form and, permuted by ``transpose``, those of ``Aᵀ``.
    Compressed rows because CPU products with them are 4–13× faster than with coordinate lists
    (measured on Cora and Coauthor CS).
    """

    def __init__(self, edge_index: torch.Tensor, num_nodes: int, prepared: bool = False) -> None:
        if not prepared:  # ``prepared``: already looped and sorted (a subgraph of another Adjacency)
            edge_index = coalesce(add_self_loops(edge_index, num_nodes=num_nodes)[0], num_nodes=num_nodes)
        self.edge_index = edge_index
        self.num_nodes = num_nodes
        target, source = self.edge_index
        self.transpose = torch.argsort(source * num_nodes + target)
        self.rows = self._compressed(target)
        self.rows_t = self._compressed(source[self.transpose])
        self.columns, self.columns_t = source, target[self.transpose]

    @property
    def degrees(self) -> torch.Tensor:
        """Each node's number of neighbours in this graph, its self-loop included."""
        return self.rows[1:] - self.rows[:-1]

    def subgraph(self, keep: torch.Tensor) -> Adjacency:
        """The same nodes with only the edges where the boolean ``keep`` (one per edge) is true."""
        return Adjacency(self.edge_index[:, keep], self.num_nodes, prepared=True)

    def _compressed(self, sorted_rows: torch.Tensor) -> torch.Tensor:
        counts = torch.bincount(sorted_rows, minlength=self.num_nodes)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def matrix(self, weights: torch.Tensor, transposed: bool = False) -> torch.Tensor:
        """``A`` (or ``Aᵀ``) with the given edge weights, in compressed-row form."""
        size = (self.num_nodes, self.num_nodes)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            if transposed:
                return torch.sparse_csr_tensor(self.rows_t, self.columns_t, weights[self.transpose], size,
                                               check_invariants=False)
            return torch.sparse_csr_tensor(self.rows, self.columns, weights, size, check_invariants=False)


class _WeightedPropagation(torch.autograd.Function):
    """``A X`` for sparse ``A`` with per-edge weights, differentiable in both.

    The weight gradient ``∂L/∂a_ij = ⟨G_i, X_j⟩`` is a product sampled on the edges (one sparse
    kernel), which is an order of magnitude faster on CPU than gathering both endpoints' rows.
    """

    @staticmethod
    def forward(ctx, weights: torch.Tensor, x: torch.Tensor, adjacency: Adjacency) -> torch.Tensor:
        ctx.save_for_backward(weights, x)
        ctx.adjacency = adjacency
        return adjacency.matrix(weights) @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weights, x = ctx.saved_tensors
        adjacency: Adjacency = ctx.adjacency
        grad_weights = grad_x = None
        if ctx.needs_input_grad[0]:
            pattern = adjacency.matrix(torch.ones_like(weights))
            grad_weights = torch.sparse.sampled_addmm(pattern, grad, x.T, beta=0.0).values()
        if ctx.needs_input_grad[1]:
            grad_x = adjacency.matrix(weights, transposed=True) @ grad
        return grad_weights, grad_x, None


class EdgeAttention(nn.Module):
    """Multi-head scaled dot-product attention on the edges (eq. 4.7), averaged over heads.

    The score of edge ``(i, j)`` (``i`` receives from ``j``, self-loops included) is
    ``⟨W_Q x_i, W_K x_j⟩ / √d_k``. ``normalise="rows"`` takes the softmax over each node's incoming
    edges (``Σ_j a_ij = 1``), ``"columns"`` over its outgoing edges (``Σ_i a_ij = 1``; the
    authors' ``attention_norm_idx=1``). The query and key weights start at a small constant and
    their biases at PyTorch's default, as in the authors' code: the first attention is nearly
    uniform, yet the score's gradient with respect to the weights is of the order of the biases,
    so the attention learns (with zero biases it would stay frozen near uniform).
    """

    NORMALISATIONS = ("rows", "columns")

    def __init__(self, features: int, attention_dim: int, heads: int, normalise: str = "rows",
                 init: float = 1e-5) -> None:
        super().__init__()
        if attention_dim % heads:
            raise ValueError(f"attention_dim={attention_dim} must be a multiple of heads={heads}")
        if normalise not in self.NORMALISATIONS:
            raise ValueError(f"normalise must be one of {self.NORMALISATIONS}, got {normalise!r}")
        self.heads, self.head_dim = heads, attention_dim // heads
        self.normalise = normalise
        self.query = nn.Linear(features, attention_dim)
        self.key = nn.Linear(features, attention_dim)
        for layer in (self.query, self.key):
            nn.init.constant_(layer.weight, init)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Edge weights (one per column of ``edge_index``; row 0 = receiving nodes)."""
        target, source = edge_index
        q = self.query(x).view(-1, self.heads, self.head_dim)
        k = self.key(x).view(-1, self.heads, self.head_dim)
        scores = (q[target] * k[source]).sum(-1) / math.sqrt(self.head_dim)
        group = target if self.normalise == "rows" else source
        return softmax(scores, group, num_nodes=x.shape[0]).mean(dim=1)


class DiffusionInputs(NamedTuple):
    """What one solve of the diffusion needs besides ``X(t)``; passed to the solve as its ``args``.

    ``graph``: the graph diffused over (self-loops added; sampled while training with
    ``edge_sampling``); ``weights``: the GRAND-l attention from ``X(0)`` (``None`` for GRAND-nl);
    ``x0``: ``X(0)`` for GRAND's ``β·X(0)`` term (``None`` without it); ``source``: GRAND++'s ``C``.
    """

    graph: Adjacency
    weights: torch.Tensor | None = None
    x0: torch.Tensor | None = None
    source: torch.Tensor | None = None

    @property
    def edge_index(self) -> torch.Tensor:
        """The diffusion graph's edges, with self-loops, sorted by receiving node."""
        return self.graph.edge_index


class GraphDiffusion(nn.Module):
    """The GRAND / GRAND++ vector field on node features ``X`` (nodes × features).

    Args:
        features: width of ``X``.
        attention_dim, heads, normalise: sizes and normalisation of :class:`EdgeAttention`.
        nonlinear: recompute the attention from ``X(t)`` at every evaluation (GRAND-nl) instead of
            once from ``X(0)`` by :meth:`prepare` (GRAND-l).
        initial_term: add GRAND's own ``β·X(0)`` (the authors' ``add_source``; ``β`` is a trainable
            scalar starting at 0), which their best settings switch on for the Planetoid graphs.
        edge_sampling: while training, keep only this fraction of the edges, those with the largest
            attention, renormalised over the kept ones (the authors' ``hard_attention`` block and its
            ``att_samp_pct``, their setting on Computers, Photo and ogbn-arxiv; linear attention only).
            Evaluation diffuses over all edges. As in their code the kept weights are constants:
            under sampling the loss does not train the attention.
        cached: keep the graph built from the first ``edge_index`` (self-loops, sorting) and reuse it
            for every later call, as PyG's ``cached=True``: for training on one fixed graph. The
            default builds it from each call's ``edge_index``.

    The field is stateless: :meth:`prepare` turns ``X(0)``, the graph and GRAND++'s source ``C``
    (eq. 4.12) into :class:`DiffusionInputs`, which reach :meth:`forward` as the solve's ``args``
    (``solve(field, x0, t, args=field.prepare(x0, edge_index))``).
    """

    def __init__(self, features: int, attention_dim: int = 16, heads: int = 1, nonlinear: bool = False,
                 initial_term: bool = False, normalise: str = "rows", edge_sampling: float | None = None,
                 cached: bool = False) -> None:
        super().__init__()
        if edge_sampling is not None and not 0 < edge_sampling < 1:
            raise ValueError(f"edge_sampling is the fraction of edges kept while training, in (0, 1); "
                             f"got {edge_sampling} (None switches sampling off)")
        if edge_sampling is not None and nonlinear:
            raise ValueError("edge_sampling needs the attention fixed from X(0) (nonlinear=False): "
                             "the authors' hard-attention block is a GRAND-l block")
        self.attention = EdgeAttention(features, attention_dim, heads, normalise)
        self.edge_sampling = edge_sampling
        self.alpha = nn.Parameter(torch.zeros(()))  # σ(0) = 0.5, as the authors initialise it
        self.beta = nn.Parameter(torch.zeros(())) if initial_term else None
        self.nonlinear = nonlinear
        self.cached = cached
        self._cached_graph: Adjacency | None = None

    def graph(self, edge_index: torch.Tensor, num_nodes: int) -> Adjacency:
        """The diffusion graph of ``edge_index`` (self-loops added); with ``cached``, the first one built."""
        if self.cached and self._cached_graph is not None:
            if self._cached_graph.num_nodes != num_nodes:
                raise ValueError(f"cached=True holds a graph of {self._cached_graph.num_nodes} nodes, but the input "
                                 f"has {num_nodes}: use cached=False for changing graphs")
            return self._cached_graph
        graph = Adjacency(edge_index, num_nodes)
        if self.cached:
            self._cached_graph = graph
        return graph

    def prepare(self, x0: torch.Tensor, edge_index: torch.Tensor,
                source: torch.Tensor | None = None) -> DiffusionInputs:
        """The inputs of a solve from ``X(0)``: the graph, the GRAND-l attention, ``X(0)``, the source."""
        graph = self.graph(edge_index, x0.shape[0])
        weights = None
        if self.edge_sampling is not None and self.training:
            with torch.no_grad():
                graph, weights = self._sampled(graph, self.attention(x0, graph.edge_index))
        elif not self.nonlinear:
            weights = self.attention(x0, graph.edge_index)
        x0 = x0 if self.beta is not None else None
        # Each tensor gets its own view node: the adjoint differentiates f with respect to them
        # separately, and must not walk from one into another's graph (the weights depend on
        # X(0), which depends on the source), which would also free that graph.
        return DiffusionInputs(graph, *(None if t is None else t.view_as(t) for t in (weights, x0, source)))

    def _sampled(self, graph: Adjacency, weights: torch.Tensor) -> tuple[Adjacency, torch.Tensor]:
        """The edges above the ``1 − edge_sampling`` quantile of attention, weights renormalised
        over each node's kept edges (incoming for ``"rows"``, outgoing for ``"columns"``)."""
        keep = weights > torch.quantile(weights, 1.0 - self.edge_sampling)
        kept = graph.subgraph(keep)
        weights = weights[keep]
        group = kept.edge_index[0 if self.attention.normalise == "rows" else 1]
        totals = weights.new_zeros(kept.num_nodes).index_add_(0, group, weights)
        return kept, weights / totals[group]

    def adjoint_params(self) -> tuple[torch.Tensor, ...]:
        """The field's own tensors that the adjoint differentiates: its scalars, and the attention's
        parameters when the attention is recomputed from ``X(t)``.

        The linear field's attention parameters are left out: they act only through the weights
        (in :class:`DiffusionInputs`), and asking the adjoint for them would walk (and free) the
        attention's graph.
        """
        held = [self.alpha, self.beta] + (list(self.attention.parameters()) if self.nonlinear else [])
        return tuple(x for x in held if x is not None and x.requires_grad)

    def forward(self, t: torch.Tensor, x: torch.Tensor, inputs: DiffusionInputs) -> torch.Tensor:
        if not isinstance(inputs, DiffusionInputs):
            raise TypeError("the graph diffusion needs its inputs: solve(field, x0, t, args=field.prepare(x0, "
                            "edge_index))")
        weights = self.attention(x, inputs.edge_index) if self.nonlinear else inputs.weights
        out = torch.sigmoid(self.alpha) * (_WeightedPropagation.apply(weights.to(x.dtype), x, inputs.graph) - x)
        if self.beta is not None:
            out = out + self.beta * inputs.x0
        return out if inputs.source is None else out + inputs.source


def labelled_source(x: torch.Tensor, labelled: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """GRAND++'s source (the authors' GRAND++ code): ``scale·(x_i − x̄)`` at labelled nodes ``i``, 0 elsewhere.

    ``x̄`` is the mean of the features over the labelled nodes.
    """
    if labelled.dtype != torch.bool or labelled.shape != x.shape[:1]:
        raise ValueError("labelled must be a boolean mask with one entry per node")
    if not labelled.any():
        raise ValueError("GRAND++ needs at least one labelled node for its source term")
    centred = x - x[labelled].mean(dim=0, keepdim=True)
    return scale * centred * labelled[:, None].to(x.dtype)


def mass_shifted_initial(x: torch.Tensor, labelled: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Eq. 4.11's shifted initial condition: ``X(0) = x − c`` with the constant ``c`` chosen so that
    ``Σ_i X_i(0) = Σ_{i∈I} (x_i − x̂)/d_i`` (``degrees``: ``d_i`` in the diffusion graph,
    :attr:`Adjacency.degrees`).

    The thesis gives it to make the random-walk limit of GRAND++ unbiased (§4.5.2); the authors'
    code starts from ``x + C`` instead.
    """
    if labelled.dtype != torch.bool or labelled.shape != x.shape[:1]:
        raise ValueError("labelled must be a boolean mask with one entry per node")
    if not labelled.any():
        raise ValueError("the mass-shifted initial condition needs at least one labelled node")
    centred = x[labelled] - x[labelled].mean(dim=0, keepdim=True)
    target = (centred / degrees[labelled, None].to(x.dtype)).sum(dim=0)
    return x - (x.sum(dim=0) - target) / x.shape[0]


def dirichlet_energy(x: torch.Tensor, edge_index: torch.Tensor, degrees: torch.Tensor | None = None) -> torch.Tensor:
    """``E(X) = Σ_(i,j)∈E ‖x_i − x_j‖² / (2N)``: how far the node features are from the diffusion's rest state.

    Over-smoothing is ``E(X(t)) → 0`` as ``t`` grows. With attention normalised over rows the rest
    state is consensus (every ``x_i`` equal); normalised over columns (mass-conserving) it is
    ``x_i ∝ d_i`` at uniform attention, so pass ``degrees`` (``Adjacency.degrees``) to measure the
    energy of ``x_i / d_i`` instead. ``x`` is nodes × features, or times × nodes × features (one
    energy per time). Self-loops contribute nothing.
    """
    if degrees is not None:
        x = x / degrees.to(x.dtype)[:, None]
    target, source = edge_index
    differences = x[..., target, :] - x[..., source, :]
    return differences.square().sum(dim=(-2, -1)) / (2 * x.shape[-2])
