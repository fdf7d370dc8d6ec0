"""GRAND and GRAND++ node classifiers (thesis §4.2–4.4), and their heavy-ball forms, on the odekit engine.

``dropout → Linear(F → hidden) → [BatchNorm] → ODE from 0 to T → ReLU → dropout → Linear(hidden → classes)``
where the ODE is graph neural diffusion (eq. 4.5 with the attention of eqs. 4.6–4.7, see
:class:`~odekit.models.graph_diffusion.GraphDiffusion`). GRAND++ adds the source ``C`` at a set of
labelled nodes (eq. 4.12) and starts from eq. 4.11's shifted ``X(0) = x − c`` or, as the
authors' code does, from ``X(0) = x + C`` (the authors' GRAND++ code). The models take PyG's
``(x, edge_index)``; rewiring (GDC, two-hop) is a transform of the ``Data`` before the model sees
it (:mod:`odekit.data.graphs`).

Given ``times``, the forward pass returns the class scores at each of those times, which is what
the early-stopping integrator (best validation accuracy over integration time) needs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..solve.spec import SolveSettings
from .block import ODEBlock, OneBlock
from .dynamics import HeavyBall, ghbnode, hbnode
from .graph_diffusion import GraphDiffusion, labelled_source, mass_shifted_initial
from .sparse_input import SparseInputDropout


class GRAND(OneBlock, nn.Module):
    """GRAND-l / GRAND-nl, and with ``source=True`` GRAND++-l / GRAND++-nl.

    Args:
        in_features, classes: input width and number of classes.
        hidden: width of the diffused features.
        t_end: integration time ``T`` (the "depth").
        attention_dim, heads: edge attention sizes (eq. 4.7).
        attention_normalisation: ``"rows"`` (each node's incoming weights sum to one) or
            ``"columns"`` (outgoing; conserves each feature's total, the authors' choice on Cora,
            CiteSeer and Coauthor CS), see :class:`~odekit.models.graph_diffusion.EdgeAttention`.
        nonlinear: attention from ``X(t)`` at every evaluation (``-nl``) instead of from ``X(0)`` (``-l``).
        edge_sampling: while training, diffuse only over this fraction of the edges, those of largest
            attention (the authors' hard-attention block, see
            :class:`~odekit.models.graph_diffusion.GraphDiffusion`); ``None``: all edges.
        cached: reuse the graph built from the first ``edge_index`` and the sparse form of the first
            ``x`` (PyG's ``cached=True``): for training on one fixed graph.
        initial_term: GRAND's trainable ``β·X(0)`` term (the authors' ``add_source``).
        source: GRAND++'s source term at the nodes given to :meth:`set_source_nodes`.
        source_scale: ``C = source_scale·(x_i − x̄)`` at the source nodes.
        initial_condition, initial_source: ``"mass_shift"``: ``X(0) = x − c`` with eq. 4.11's constant
            ``c`` (:func:`~odekit.models.graph_diffusion.mass_shifted_initial`, the thesis's model);
            ``"plus_source"``: ``X(0) = x + initial_source·C`` (the authors' code).
        input_dropout, dropout: dropout before the encoder and before the decoder.
        batch_norm: batch normalisation after the encoder (the authors' Photo / arXiv setting).
        heavy_ball: ``None`` integrates GRAND's first-order diffusion ``X' = F(X)``; ``"hb"`` the
            heavy-ball system of eq. 3.43 on it, ``X' = M``, ``M' = −γ M + F(X)``, i.e. the damped
            wave equation ``X'' + γ X' = F(X)`` (HB-GRAND, the second-order graph ODE the thesis
            leaves as future work, §4.7 and ch. 6); ``"ghb"`` the gated form of eq. 3.56,
            ``X' = tanh(M)``, ``M' = −γ M + F(X) − ξ X``. ``F`` is the diffusion (with GRAND++'s source).
        damping, learn_damping: the initial ``γ`` (in ``(0, 2)``, stored as ``γ = 2·sigmoid(ω)``) and
            whether it is trained. A mode of the linear diffusion with rate ``λ`` (an eigenvalue of
            ``σ(α)(I − A)``, in ``[0, 2)``) solves ``s² + γ s + λ = 0``: for ``γ < 2√λ`` it is
            underdamped and decays at ``γ/2`` instead of GRAND's ``λ``. The default 0.5 leaves the
            modes with ``λ > 1/16`` underdamped; the thesis gives no value, this is ours.
        initial_velocity: ``"zero"``: ``M(0) = 0``; ``"learned"``: ``M(0) = W X(0)`` with a linear
            layer that starts at zero.
        max_nfe: a solve that needs more evaluations raises
            :class:`~odekit.solve.MaxStepsExceededError` (the authors' guard; a deep ``T`` with a
            stiff attention can otherwise run for hours).
        settings, **solve_keywords: how the engine integrates, a
            :class:`~odekit.solve.spec.SolveSettings` or its fields as keywords (``method``,
            ``rtol``, ``gradient``, ``solver``…; default dopri5 at 1e-3 with backprop); every engine
            method works, explicit or proximal.
    """

    INITIAL_CONDITIONS = ("plus_source", "mass_shift")
    HEAVY_BALL = ("hb", "ghb")
    VELOCITIES = ("zero", "learned")
    DAMPING_BOUND = 2.0

    def __init__(
        self,
        in_features: int,
        classes: int,
        *,
        hidden: int = 80,
        t_end: float = 1.0,
        attention_dim: int = 16,
        heads: int = 1,
        attention_normalisation: str = "rows",
        nonlinear: bool = False,
        edge_sampling: float | None = None,
        cached: bool = False,
        initial_term: bool = False,
        source: bool = False,
        source_scale: float = 1.0,
        initial_source: float = 1.0,
        initial_condition: str = "mass_shift",
        input_dropout: float = 0.5,
        dropout: float = 0.0,
        batch_norm: bool = False,
        heavy_ball: str | None = None,
        damping: float = 0.5,
        learn_damping: bool = True,
        initial_velocity: str = "zero",
        max_nfe: int = 2000,
        settings: SolveSettings | None = None,
        **solve_keywords: Any,
    ) -> None:
        super().__init__()
        if t_end <= 0:
            raise ValueError(f"t_end (the depth T) must be positive, got {t_end}")
        if initial_condition not in self.INITIAL_CONDITIONS:
            raise ValueError(f"initial_condition must be one of {self.INITIAL_CONDITIONS}, got {initial_condition!r}")
        if heavy_ball is not None and heavy_ball not in self.HEAVY_BALL:
            raise ValueError(f"heavy_ball must be None or one of {self.HEAVY_BALL}, got {heavy_ball!r}")
        if initial_velocity not in self.VELOCITIES:
            raise ValueError(f"initial_velocity must be one of {self.VELOCITIES}, got {initial_velocity!r}")
        self.encoder = nn.Linear(in_features, hidden)
        self.norm = nn.BatchNorm1d(hidden) if batch_norm else None
        self.field = GraphDiffusion(hidden, attention_dim, heads, nonlinear, initial_term,
                                    attention_normalisation, edge_sampling, cached)
        self.heavy: HeavyBall | None = None
        self.velocity: nn.Linear | None = None
        if heavy_ball is not None:
            make = hbnode if heavy_ball == "hb" else ghbnode
            self.heavy = make(self.field, gamma=damping, learn_gamma=learn_damping, epsilon=self.DAMPING_BOUND)
            if initial_velocity == "learned":
                self.velocity = nn.Linear(hidden, hidden)
                nn.init.zeros_(self.velocity.weight)
                nn.init.zeros_(self.velocity.bias)
        settings = SolveSettings.of(settings, solve_keywords).with_options(max_nfe=max_nfe)
        self.block = ODEBlock(self.field if self.heavy is None else self.heavy, t_end, settings=settings)
        self.decoder = nn.Linear(hidden, classes)
        self.source, self.source_scale, self.initial_source = source, source_scale, initial_source
        self.initial_condition = initial_condition
        self.input_dropout, self.dropout = input_dropout, dropout
        self.source_nodes: torch.Tensor | None = None
        self._input_dropout = SparseInputDropout(cached)

    def set_source_nodes(self, nodes: torch.Tensor) -> None:
        """The labelled nodes that carry GRAND++'s source, kept for every later ``forward``: a
        boolean node mask or a 1-D tensor of node indices (PyG's ``data.train_mask`` or
        ``train_idx`` alike). ``forward(..., source_nodes=)`` passes them per call instead."""
        _check_nodes(nodes)
        self.source_nodes = nodes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input dropout and the linear encoder; a mostly-zero ``x`` goes through a sparse product
        (the same result, see :mod:`odekit.models.sparse_input`)."""
        dropped = self._input_dropout(x, self.input_dropout, self.training)
        if dropped is None:
            h = self.encoder(F.dropout(x, self.input_dropout, self.training))
        else:
            h = torch.sparse.mm(dropped, self.encoder.weight.t()) + self.encoder.bias
        return self.norm(h) if self.norm is not None else h

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, times: torch.Tensor | None = None, *,
                source_nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Class scores at ``T`` (nodes × classes), or at each of ``times`` (len(times) × nodes × classes).

        GRAND++ takes its source nodes (a mask or indices) as ``source_nodes`` or from
        :meth:`set_source_nodes`."""
        z = self.features(x, edge_index, times, source_nodes=source_nodes)
        return self.decoder(F.dropout(F.relu(z), self.dropout, self.training))

    def adjoint_params(self) -> tuple[torch.Tensor, ...]:
        """What the adjoint differentiates besides the state: the diffusion's tensors and the damping."""
        return self.field.adjoint_params() + (self.heavy.own_parameters() if self.heavy is not None else ())

    def features(self, x: torch.Tensor, edge_index: torch.Tensor, times: torch.Tensor | None = None, *,
                 source_nodes: torch.Tensor | None = None) -> torch.Tensor:
        """The diffused features ``X`` at ``T`` (or at each of ``times``) before the decoder."""
        h = self.encode(x)
        source = None
        if self.source:
            nodes = self.source_nodes if source_nodes is None else _check_nodes(source_nodes)
            if nodes is None:
                raise RuntimeError("GRAND++ needs its source nodes: forward(x, edge_index, source_nodes=train_mask) "
                                   "or set_source_nodes(mask or indices) before forward")
            nodes = _node_mask(nodes.to(h.device), x.shape[0])
            source = labelled_source(h, nodes, self.source_scale)
            if self.initial_condition == "plus_source":
                h = h + self.initial_source * source
            else:
                h = mass_shifted_initial(h, nodes, self.field.graph(edge_index, h.shape[0]).degrees)
        inputs = self.field.prepare(h, edge_index, source)
        if self.heavy is None:
            return self.block(h, times, args=inputs, adjoint_params=self.adjoint_params())
        m = self.velocity(h) if self.velocity is not None else torch.zeros_like(h)
        return self.block((h, m), times, args=inputs, adjoint_params=self.adjoint_params())[0]


def _check_nodes(nodes: torch.Tensor) -> torch.Tensor:
    if not isinstance(nodes, torch.Tensor) or nodes.ndim != 1 or not (
            nodes.dtype == torch.bool or not (nodes.is_floating_point() or nodes.is_complex())):
        raise ValueError("source nodes must be a 1-D boolean node mask or a 1-D tensor of node indices, got "
                         f"{getattr(nodes, 'dtype', type(nodes).__name__)} of shape "
                         f"{tuple(getattr(nodes, 'shape', ()))}")
    return nodes


def _node_mask(nodes: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """A boolean mask over ``num_nodes`` nodes from a mask or from indices, checked against the graph."""
    if nodes.dtype == torch.bool:
        if nodes.shape[0] != num_nodes:
            raise RuntimeError(f"the source-node mask has {nodes.shape[0]} entries but the graph {num_nodes} nodes")
        return nodes
    if nodes.numel() and (int(nodes.min()) < 0 or int(nodes.max()) >= num_nodes):
        raise RuntimeError(f"source-node indices must lie in [0, {num_nodes}); "
                           f"got {int(nodes.min())}…{int(nodes.max())}")
    return torch.zeros(num_nodes, dtype=torch.bool, device=nodes.device).index_fill_(0, nodes.long(), True)
