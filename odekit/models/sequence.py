"""ODE-RNN hybrids for irregularly sampled time series (thesis eqs. 2.39–2.40, §3.4–3.5.3).

Between observations the hidden state follows an ODE of the model family (NODE, ANODE, SONODE,
HBNODE, GHBNODE); at each observation an RNN cell jumps it (a residual update, as the authors'
code); a dense readout maps ``h`` to the output. Samples of a batch have different gaps, so each
flow integrates on ``[0, 1]`` with every sample's vector field scaled by its own gap — the
change of time interval of eqs. 3.88–3.91 — and one solve serves the whole batch; or, with
``per_sample=True``, every sample integrates its own interval with its own steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..solve import SolveStats
from ..solve.spec import SolveSettings
from .dynamics import FAMILIES
from .layers import mlp

SEQUENCE_KINDS = ("odernn", "anode", "sonode", "hbnode", "ghbnode")


class TimeScaled(nn.Module):
    """``dz/dτ = Δt · g(z)`` on ``τ ∈ [0, 1]``: sample ``i`` reaches ``z_i(Δt_i)`` at ``τ = 1`` (eq. 3.91).

    Stateless: the gaps ``Δt`` come with each solve as its ``args``
    (``solve(TimeScaled(g), z0, t, args=gaps)``), so the adjoint pass, which evaluates the field
    again later, sees the gaps of its own solve. The hybrids' fields are autonomous: ``τ`` is
    passed through unchanged.
    """

    def __init__(self, dynamics: nn.Module) -> None:
        super().__init__()
        self.dynamics = dynamics

    def forward(self, t: torch.Tensor, state, gaps: torch.Tensor):
        out = self.dynamics(t, state)
        scale = gaps[:, None]
        return tuple(scale * o for o in out) if isinstance(out, tuple) else scale * out


class _Field(nn.Module):
    """``f(t, x)`` from a network of ``x`` alone (the hybrids' fields are autonomous)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class HybridSizes:
    """Sizes of one hybrid: state width ``n``, ODE-network widths, jump-network widths.

    ``ode_hidden`` empty: the ODE network is one linear map (Walker2d); otherwise an MLP with
    ReLU (plane vibration, Table 3.4). ``jump_hidden`` empty: the jump is linear in the state and
    the input (plane vibration); otherwise a tanh MLP on ``[state, x]`` (Walker2d, Table 3.5).
    ``augment``: for ANODE, how many state entries start at zero instead of from the data.
    """

    n: int
    ode_hidden: tuple[int, ...] = ()
    jump_hidden: tuple[int, ...] = ()
    augment: int = 0


class LinearJump(nn.Module):
    """``Δz = Σ_k W_k z_k + U x`` (one linear map, with bias, per state component and for the input)."""

    def __init__(self, n: int, components: int, features: int) -> None:
        super().__init__()
        width = n * components
        self.state_maps = nn.ModuleList(nn.Linear(n, width) for _ in range(components))
        self.input_map = nn.Linear(features, width)

    def forward(self, parts: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = self.input_map(x)
        for layer, part in zip(self.state_maps, parts):
            out = out + layer(part)
        return out


class MLPJump(nn.Module):
    """``Δz = MLP([z, x])`` with tanh hidden layers."""

    def __init__(self, n: int, components: int, features: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp([n * components + features, *hidden, n * components], "tanh")

    def forward(self, parts: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([*parts, x], dim=-1))


class ODERNN(nn.Module):
    """An ODE-RNN hybrid of kind ``odernn``, ``anode``, ``sonode``, ``hbnode`` or ``ghbnode``.

    Args:
        kind: the ODE between observations.
        features: input and output width.
        sizes: :class:`HybridSizes`.
        window: length of the input window when the initial state is computed from the whole
            flattened window (the plane-vibration model); ``None`` starts from zeros (Walker2d).
        heavy_ball: keyword arguments for the (G)HBNODE dynamics (``gamma``, ``xi``, ``learn_xi``, …).
        settings, **solve_keywords: how the flows are solved, a
            :class:`~odekit.solve.spec.SolveSettings` or its fields as keywords (``method``,
            ``rtol``, ``gradient``…; default dopri5 at 1e-3 with the adjoint).

    ``forward(x, dt, forecast=0)`` takes inputs ``B × L × features`` and gaps ``B × L`` (from
    each input to the time of its prediction) and returns next-step predictions
    ``B × L × features`` and, if ``forecast > 0``, predictions at unit steps after the last input.
    """

    def __init__(self, kind: str, features: int, sizes: HybridSizes, window: int | None = None,
                 heavy_ball: dict[str, Any] | None = None, settings: SolveSettings | None = None,
                 **solve_keywords: Any) -> None:
        super().__init__()
        if kind not in SEQUENCE_KINDS:
            raise ValueError(f"unknown hybrid kind {kind!r}; choose one of {', '.join(SEQUENCE_KINDS)}")
        if kind != "anode" and sizes.augment:
            raise ValueError("augment applies to kind='anode' only")
        self.kind, self.features, self.sizes, self.window = kind, features, sizes, window
        n = sizes.n
        family = FAMILIES["node" if kind == "odernn" else kind]
        self.components = family.components

        def network(width: int) -> nn.Module:
            return _Field(mlp([width, *sizes.ode_hidden, n], "relu") if sizes.ode_hidden else nn.Linear(width, n))

        self.dynamics = family.dynamics(network, n, **(heavy_ball or {}))
        self.settings = SolveSettings.of(settings, solve_keywords, gradient="adjoint")
        self._solves: list[SolveStats] = []
        self.jump = (MLPJump(n, self.components, features, sizes.jump_hidden) if sizes.jump_hidden
                     else LinearJump(n, self.components, features))
        self.readout = nn.Linear(n, features)
        if window is not None:
            data_width = n * self.components - sizes.augment
            self.initial = nn.Linear(window * features, data_width)
        else:
            self.initial = None

    @property
    def stats(self) -> SolveStats:
        """Counters summed over the flows of the latest forward call (backward NFE once ``backward()`` ran)."""
        total = SolveStats(method=self.settings.method)
        for s in self._solves:
            total += s
        return total

    def initial_state(self, x: torch.Tensor) -> list[torch.Tensor]:
        batch = x.shape[0]
        n = self.sizes.n
        if self.initial is None:
            return [x.new_zeros(batch, n) for _ in range(self.components)]
        z = self.initial(x[:, : self.window].reshape(batch, -1))
        if self.sizes.augment:
            z = torch.cat([z, z.new_zeros(batch, self.sizes.augment)], dim=1)
        return list(z.split(n, dim=1))

    def evolve(self, parts: list[torch.Tensor], gaps: torch.Tensor, times: torch.Tensor | None = None):
        """Flow every sample by its own gap (or, given ``times`` on [0, 1], to each of them).

        With ``per_sample=True`` in the settings each sample integrates its own interval
        ``[0, Δt_i]`` with its own steps; otherwise one batch-coupled solve on ``[0, 1]`` of the
        time-scaled field (eq. 3.91) serves all, stepping at the pace of the hardest sample.
        """
        state = tuple(parts) if self.components == 2 else parts[0]
        t = times if times is not None else torch.tensor([0.0, 1.0], dtype=gaps.dtype, device=gaps.device)
        params = tuple(p for p in self.dynamics.parameters() if p.requires_grad)
        if self.settings.per_sample:
            sol = self.settings.solve(self.dynamics, state, gaps[:, None] * t, adjoint_params=params)
        else:
            sol = self.settings.solve(TimeScaled(self.dynamics), state, t, args=gaps, adjoint_params=params)
        self._solves.append(sol.stats)
        ys = list(sol.ys) if self.components == 2 else [sol.ys]
        return ys if times is not None else [y[-1] for y in ys]

    def trajectory(self, x: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Next-step predictions and the state right after each observation's jump.

        The states are the nodes of the autograd graph through which ``∂L/∂h_t`` flows (eq. 3.3),
        so ``retain_grad()`` on them exposes the adjoint at every observation time.
        """
        self._solves = []
        parts = self.initial_state(x)
        predictions, states = [], []
        for j in range(x.shape[1]):
            delta = self.jump(parts, x[:, j])
            parts = [p + d for p, d in zip(parts, delta.split(self.sizes.n, dim=1))]
            states.append(parts)
            parts = self.evolve(parts, dt[:, j])
            predictions.append(self.readout(parts[0]))
        return torch.stack(predictions, dim=1), states

    def forward(self, x: torch.Tensor, dt: torch.Tensor, forecast: int = 0):
        out, states = self.trajectory(x, dt)
        if not forecast:
            return out
        anchor = states[-1]
        # Forecast at unit steps after the last input: one solve with outputs at 1/K, 2/K, …, 1
        # of the interval [0, K] (the gaps scale it to K steps).
        times = torch.linspace(0.0, 1.0, forecast + 1, dtype=x.dtype, device=x.device)
        ahead = self.evolve(anchor, torch.full_like(dt[:, 0], float(forecast)), times)
        return out, self.readout(ahead[0][1:]).transpose(0, 1)
