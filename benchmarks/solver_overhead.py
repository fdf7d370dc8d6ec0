"""Solver overhead: odekit vs torchdiffeq (and torchode, diffrax), dopri5 at rtol 1e-7 / atol 1e-9, in one run.

For each MLP vector field it measures, interleaving the libraries: the forward solve (no
graph), the forward + backward solve with the adjoint, the bare cost of one ``f`` call and of
one vector–Jacobian product, and both libraries' NFE. It prints the wall ratio
odekit / torchdiffeq and the overhead factor wall / (NFE × bare cost), and writes JSON.

Optional peers, measured in the same interleaved rounds when installed (``pip install torchode
jax diffrax``): torchode (its dopri5 with the integral controller, per-sample steps; forward and
backprop through the solve, ``AutoDiffAdjoint``) and diffrax (``Dopri5``, ``PIDController``, the
same weights in JAX, ``jax.jit``; forward and ``BacksolveAdjoint``), whose compile time is
reported separately.

odekit's ``compile=True`` joins the same rounds: forward, forward + backward by backprop (against
diffrax's discretise-then-optimise ``RecursiveCheckpointAdjoint``) and by the adjoint (against
``BacksolveAdjoint``), its compile time apart; and the bare cost of one ``f`` evaluation in
PyTorch and inside XLA (38 chained evaluations in one jit-compiled loop), which bounds what any
PyTorch solver can reach against diffrax on the CPU.

    python benchmarks/solver_overhead.py [--repeats 7] [--threads N] [--out benchmarks/results/solver_overhead.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import odekit
from odekit.experiments.timing import interleaved, machine_info
from odekit.report.atomic import write_json

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - the peer is a test extra
    sys.exit("this benchmark compares against torchdiffeq: pip install torchdiffeq")

RTOL, ATOL = 1e-7, 1e-9
CASES = {"a: MLP 2-64-64-2, batch 256": (2, 64, 256), "b: MLP 32-256-256-32, batch 1024": (32, 256, 1024)}


class MLPField(torch.nn.Module):
    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim, width), torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh(),
            torch.nn.Linear(width, dim),
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class Counting(torch.nn.Module):
    """Counts calls of a field; used only in untimed runs that read torchdiffeq's NFE."""

    def __init__(self, field: torch.nn.Module) -> None:
        super().__init__()
        self.field, self.calls = field, 0

    def forward(self, t, y):
        self.calls += 1
        return self.field(t, y)


def torchode_runs(field: torch.nn.Module, y0: torch.Tensor, t: torch.Tensor) -> dict:
    """torchode's forward and forward + backward (backprop through its loop), if installed."""
    try:
        import torchode as to
    except ImportError:
        return {}
    term = to.ODETerm(field)
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=ATOL, rtol=RTOL, term=term))
    t_eval = t.expand(y0.shape[0], -1)

    def forward():
        with torch.no_grad():
            solver.solve(to.InitialValueProblem(y0=y0, t_eval=t_eval))

    def forward_backward():
        y = y0.clone().requires_grad_()
        solver.solve(to.InitialValueProblem(y0=y, t_eval=t_eval)).ys[:, -1].square().sum().backward()

    return {"torchode_fwd": forward, "torchode_fwdbwd": forward_backward}


def diffrax_runs(field: MLPField, y0: torch.Tensor) -> dict:
    """diffrax (jit-compiled, the same weights in JAX) forward and forward + backward by its
    BacksolveAdjoint, if installed; ``diffrax_compile_s``: the first calls' extra time."""
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {}
    layers = [(jnp.asarray(m.weight.detach().numpy()), jnp.asarray(m.bias.detach().numpy()))
              for m in field.net if isinstance(m, torch.nn.Linear)]

    def vf(t, y, params):
        for i, (w, b) in enumerate(params):
            y = y @ w.T + b
            if i < len(params) - 1:
                y = jnp.tanh(y)
        return y

    term = diffrax.ODETerm(vf)
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    def solve(params, y, adjoint):
        return diffrax.diffeqsolve(term, diffrax.Dopri5(), 0.0, 1.0, None, y, args=params,
                                   stepsize_controller=controller, max_steps=100_000, adjoint=adjoint).ys[-1]

    def gradient_of(adjoint):
        return jax.jit(jax.grad(lambda params, y: jnp.sum(solve(params, y, adjoint) ** 2), argnums=(0, 1)))

    forward_jit = jax.jit(lambda params, y: solve(params, y, diffrax.RecursiveCheckpointAdjoint()))
    backsolve_jit, checkpoint_jit = (gradient_of(diffrax.BacksolveAdjoint()),
                                     gradient_of(diffrax.RecursiveCheckpointAdjoint()))
    # The bare cost of one evaluation inside XLA: 38 chained evaluations in one compiled loop.
    chained = jax.jit(lambda params, y: jax.lax.fori_loop(0, 38, lambda i, z: vf(0.0, z, params), y))
    y = jnp.asarray(y0.numpy())

    def forward():
        forward_jit(layers, y).block_until_ready()

    def forward_backward():
        jax.block_until_ready(backsolve_jit(layers, y))

    def forward_backward_checkpoint():
        jax.block_until_ready(checkpoint_jit(layers, y))

    def bare_f38():
        chained(layers, y).block_until_ready()

    return {"diffrax_fwd": forward, "diffrax_fwdbwd": forward_backward,
            "diffrax-checkpoint_fwdbwd": forward_backward_checkpoint, "xla_bare_f38": bare_f38,
            "diffrax_compile_s": first_call_costs({"fwd": forward, "fwdbwd": forward_backward,
                                                  "fwdbwd-checkpoint": forward_backward_checkpoint,
                                                  "bare": bare_f38})}


def first_call_costs(runs: dict) -> dict[str, float]:
    """Each run's first call minus its second: the compile time."""
    costs = {}
    for name, fn in runs.items():
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
        start = time.perf_counter()
        fn()
        costs[name] = first - (time.perf_counter() - start)
    return costs


def measure(dim: int, width: int, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    field = MLPField(dim, width)
    y0 = torch.randn(batch, dim)
    t = torch.tensor([0.0, 1.0])
    params = tuple(field.parameters())

    def forward(lib):
        def run():
            with torch.no_grad():
                lib.odeint(field, y0, t, rtol=RTOL, atol=ATOL)
        return run

    def forward_backward(lib):
        def run():
            y = y0.clone().requires_grad_()
            lib.odeint_adjoint(field, y, t, rtol=RTOL, atol=ATOL)[-1].square().sum().backward()
        return run

    def bare_f():
        with torch.no_grad():
            for _ in range(20):
                field(t[0], y0)

    a = torch.randn_like(y0)

    def bare_vjp():
        for _ in range(20):
            y = y0.detach().requires_grad_()
            with torch.enable_grad():
                out = field(t[0], y)
            torch.autograd.grad(out, (y, *params), a)

    def compiled(gradient: str | None):
        def run():
            if gradient is None:
                with torch.no_grad():
                    odekit.solve(field, y0, t, rtol=RTOL, atol=ATOL, compile=True)
                return
            y = y0.clone().requires_grad_()
            odekit.solve(field, y, t, rtol=RTOL, atol=ATOL, gradient=gradient,
                         compile=True).ys[-1].square().sum().backward()
        return run

    def eager_backprop():
        y = y0.clone().requires_grad_()
        odekit.solve(field, y, t, rtol=RTOL, atol=ATOL).ys[-1].square().sum().backward()

    ours_compiled = {"compiled_fwd": compiled(None), "compiled_fwdbwd-backprop": compiled("backprop"),
                     "compiled_fwdbwd-adjoint": compiled("adjoint")}
    odekit_compile_s = first_call_costs(ours_compiled)
    peers = {**torchode_runs(field, y0, t), **diffrax_runs(field, y0)}
    compile_s = peers.pop("diffrax_compile_s", None)
    times = interleaved(
        {"odekit_fwd": forward(odekit), "torchdiffeq_fwd": forward(torchdiffeq),
         "odekit_fwdbwd": forward_backward(odekit), "torchdiffeq_fwdbwd": forward_backward(torchdiffeq),
         "eager_fwdbwd-backprop": eager_backprop, "bare_f20": bare_f, "bare_vjp20": bare_vjp, **ours_compiled,
         **peers},
        repeats,
    )
    peer_times = {name: times.pop(name) for name in peers}
    compiled_times = {name: times.pop(name) for name in (*ours_compiled, "eager_fwdbwd-backprop")}
    xla_f_cost = peer_times.pop("xla_bare_f38", None)
    f_cost, vjp_cost = times.pop("bare_f20") / 20, times.pop("bare_vjp20") / 20

    # NFE, from untimed runs.
    with odekit.record_stats() as rec, torch.no_grad():
        odekit.odeint(field, y0, t, rtol=RTOL, atol=ATOL)
    ours_fwd = rec.nfe
    with odekit.record_stats() as rec:
        y = y0.clone().requires_grad_()
        odekit.odeint_adjoint(field, y, t, rtol=RTOL, atol=ATOL)[-1].square().sum().backward()
    ours_bwd = rec.nfe_backward
    counting = Counting(field)
    with torch.no_grad():
        torchdiffeq.odeint(counting, y0, t, rtol=RTOL, atol=ATOL)
    theirs_fwd = counting.calls
    counting.calls = 0
    y = y0.clone().requires_grad_()
    ys = torchdiffeq.odeint_adjoint(counting, y, t, rtol=RTOL, atol=ATOL, adjoint_params=params)
    ys[-1].square().sum().backward()
    theirs_bwd = counting.calls - theirs_fwd

    # One seed can tip a near-round-off float32 error estimate either way; count NFE over ten.
    seeds_ours, seeds_theirs = 0, 0
    for seed in range(10):
        torch.manual_seed(seed)
        seeded, ys0 = MLPField(dim, width), torch.randn(batch, dim)
        counting = Counting(seeded)
        with torch.no_grad():
            seeds_ours += odekit.solve(seeded, ys0, t, rtol=RTOL, atol=ATOL).stats.nfe
            torchdiffeq.odeint(counting, ys0, t, rtol=RTOL, atol=ATOL)
        seeds_theirs += counting.calls

    result = {
        "f_cost_s": f_cost, "vjp_cost_s": vjp_cost, "peers_s": peer_times, "diffrax_compile_s": compile_s,
        "xla_f_cost_s": None if xla_f_cost is None else xla_f_cost / 38, "compiled_s": compiled_times,
        "odekit_compile_s": odekit_compile_s,
        "nfe_forward_10_seeds": {"odekit": seeds_ours, "torchdiffeq": seeds_theirs},
        "nfe_forward": {"odekit": ours_fwd, "torchdiffeq": theirs_fwd},
        "nfe_backward": {"odekit": ours_bwd, "torchdiffeq": theirs_bwd},
    }
    for mode, bare in (("fwd", None), ("fwdbwd", None)):
        ours, theirs = times[f"odekit_{mode}"], times[f"torchdiffeq_{mode}"]
        bare_ours = ours_fwd * f_cost + (ours_bwd * (f_cost + vjp_cost) if mode == "fwdbwd" else 0)
        bare_theirs = theirs_fwd * f_cost + (theirs_bwd * (f_cost + vjp_cost) if mode == "fwdbwd" else 0)
        result[mode] = {
            "odekit_s": ours, "torchdiffeq_s": theirs, "ratio_odekit_over_torchdiffeq": ours / theirs,
            "overhead_odekit": ours / bare_ours, "overhead_torchdiffeq": theirs / bare_theirs,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "solver_overhead.json")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads of PyTorch and XLA alike (default: each library's own default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        # Read when JAX starts (it is imported later, by diffrax_runs).
        os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen="
                                   f"{'true' if args.threads > 1 else 'false'} "
                                   f"intra_op_parallelism_threads={args.threads}").strip()
    console = Console(width=170)
    results = {}
    for name, (dim, width, batch) in CASES.items():
        console.print(f"[bold]{name}[/] …")
        results[name] = measure(dim, width, batch, args.repeats)
    table = Table(title=f"dopri5, rtol {RTOL:g}, atol {ATOL:g}; ratio = odekit / torchdiffeq wall time; "
                        "overhead = wall / (NFE × bare cost)")
    for col in ("case", "mode", "odekit s", "torchdiffeq s", "ratio", "overhead odekit", "overhead torchdiffeq",
                "NFE fwd (ok/td)", "NFE bwd (ok/td)", "NFE fwd, 10 seeds (ok/td)"):
        table.add_column(col)
    for name, r in results.items():
        for mode in ("fwd", "fwdbwd"):
            m = r[mode]
            table.add_row(
                name, "forward" if mode == "fwd" else "fwd+bwd (adjoint)", f"{m['odekit_s']:.4f}",
                f"{m['torchdiffeq_s']:.4f}", f"{m['ratio_odekit_over_torchdiffeq']:.2f}",
                f"{m['overhead_odekit']:.2f}", f"{m['overhead_torchdiffeq']:.2f}",
                f"{r['nfe_forward']['odekit']}/{r['nfe_forward']['torchdiffeq']}",
                "-" if mode == "fwd" else f"{r['nfe_backward']['odekit']}/{r['nfe_backward']['torchdiffeq']}",
                f"{r['nfe_forward_10_seeds']['odekit']}/{r['nfe_forward_10_seeds']['torchdiffeq']}",
            )
    console.print(table)
    peers = Table(title="optional peers in the same rounds: wall time and ratio odekit / peer (below 1: odekit faster)")
    for col in ("case", "mode", "peer", "peer s", "odekit / peer", "diffrax compile s"):
        peers.add_column(col)
    for name, r in results.items():
        for key, seconds in r["peers_s"].items():
            peer, mode = key.rsplit("_", 1)
            compile_s = (r["diffrax_compile_s"] or {}).get(mode) if peer == "diffrax" else None
            peers.add_row(name, "forward" if mode == "fwd" else "fwd+bwd", peer, f"{seconds:.4f}",
                          f"{r[mode]['odekit_s'] / seconds:.2f}", "-" if compile_s is None else f"{compile_s:.2f}")
    console.print(peers if any(r["peers_s"] for r in results.values()) else
                  "torchode / diffrax not installed: peers skipped (pip install torchode jax diffrax)")
    compiled = Table(title="compile=True: odekit eager and compiled against diffrax-jit (ratio below 1: odekit "
                           "faster); bare f: one evaluation of the MLP, PyTorch eager / inside XLA")
    for col in ("case", "mode", "odekit eager s", "odekit compiled s", "diffrax-jit s", "compiled / diffrax",
                "compile s (odekit / diffrax)", "bare f µs (torch / XLA)"):
        compiled.add_column(col)
    rows = (("forward", "odekit_fwd", "compiled_fwd", "diffrax_fwd", "compiled_fwd", "fwd"),
            ("fwd+bwd, backprop vs RecursiveCheckpoint", "eager_fwdbwd-backprop", "compiled_fwdbwd-backprop",
             "diffrax-checkpoint_fwdbwd", "compiled_fwdbwd-backprop", "fwdbwd-checkpoint"),
            ("fwd+bwd, adjoint vs BacksolveAdjoint", "odekit_fwdbwd", "compiled_fwdbwd-adjoint", "diffrax_fwdbwd",
             "compiled_fwdbwd-adjoint", "fwdbwd"))
    for name, r in results.items():
        eager_s = {"odekit_fwd": r["fwd"]["odekit_s"], "odekit_fwdbwd": r["fwdbwd"]["odekit_s"], **r["compiled_s"]}
        xla = r["xla_f_cost_s"]
        for mode, eager, ours, peer, ours_compile, peer_compile in rows:
            theirs = r["peers_s"].get(peer)
            ours_s = r["compiled_s"][ours]
            compiled.add_row(
                name, mode, f"{eager_s[eager]:.4f}", f"{ours_s:.4f}", "-" if theirs is None else f"{theirs:.4f}",
                "-" if theirs is None else f"{ours_s / theirs:.2f}",
                f"{r['odekit_compile_s'][ours_compile]:.1f} / "
                f"{'-' if r['diffrax_compile_s'] is None else format(r['diffrax_compile_s'][peer_compile], '.1f')}",
                f"{r['f_cost_s'] * 1e6:.0f} / {'-' if xla is None else format(xla * 1e6, '.0f')}")
    console.print(compiled)
    write_json(args.out, {"benchmark": "solver_overhead", "rtol": RTOL, "atol": ATOL, "machine": machine_info(),
                          "repeats": args.repeats, "results": results})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
