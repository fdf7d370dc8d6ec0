"""Synthetic datasets generated on the fly (seeded): nothing to download."""

from __future__ import annotations

import torch


def nested_spheres(n_inner: int = 40, n_outer: int = 80, inner_radius: float = 0.5,
                   outer_radii: tuple[float, float] = (0.85, 1.0), dim: int = 2, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Points uniform in a ball (label −1) and in a surrounding shell (label +1), thesis §3.5.1.

    No continuous flow of the plane can pull the two classes apart (NODEs preserve topology,
    Dupont et al. 2019), which is what the point-cloud experiment probes.
    """
    if not 0 < inner_radius < outer_radii[0] < outer_radii[1]:
        raise ValueError("need 0 < inner_radius < outer_radii[0] < outer_radii[1]")
    gen = torch.Generator().manual_seed(seed)

    def shell(n: int, r0: float, r1: float) -> torch.Tensor:
        direction = torch.randn(n, dim, generator=gen)
        direction = direction / direction.norm(dim=1, keepdim=True)
        # Radius with density ∝ r^(dim−1): uniform in volume.
        u = torch.rand(n, 1, generator=gen)
        radius = (r0**dim + u * (r1**dim - r0**dim)) ** (1.0 / dim)
        return direction * radius

    x = torch.cat([shell(n_inner, 0.0, inner_radius), shell(n_outer, *outer_radii)])
    y = torch.cat([-torch.ones(n_inner, 1), torch.ones(n_outer, 1)])
    perm = torch.randperm(len(x), generator=gen)
    return x[perm], y[perm]


__all__ = ["nested_spheres"]
