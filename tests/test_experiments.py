"""Each experiment end to end in its smoke profile, plus the pieces they are made of."""

import json

import pytest
import torch

from odekit.data.landscapes import LANDSCAPES
from odekit.experiments import execute, get
from odekit.report.records import Key, read_results


@pytest.mark.parametrize("name", sorted(LANDSCAPES))
def test_landscape_gradients_match_autograd_and_vanish_at_the_minimiser(name):
    land = LANDSCAPES[name]
    points = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(land.value(points).sum(), points)
    torch.testing.assert_close(land.gradient(points.detach()), expected)
    minimiser = torch.tensor(land.minimiser, dtype=torch.float64)
    assert land.value(minimiser).abs() < 1e-12 and land.gradient(minimiser).abs().max() < 1e-12


@pytest.mark.slow
def test_hb_optim_demo_smoke(tmp_path, verdicts_of):
    exp = get("hb_optim_demo")
    run_dir = execute(exp, exp.config("smoke"), tmp_path, tmp_path)
    verdicts_of(exp, run_dir)
    results = read_results(run_dir)
    rows = (run_dir / "tables" / "hb_optim_demo.csv").read_text().splitlines()
    assert len(rows) == 5  # header + 2 functions × 2 ODEs
    # Gradient flow from (0, 0) on Rosenbrock at t = 1 with Δt = 0.001: the distance is known from an
    # independent fine solve (scipy, below) and every run must land on it.
    from scipy.integrate import solve_ivp

    land = LANDSCAPES["rosenbrock"]
    sol = solve_ivp(lambda t, x: -land.gradient(torch.from_numpy(x)).numpy(), (0, 1), [0.0, 0.0], method="DOP853",
                    rtol=1e-12, atol=1e-12)
    expected = float(((torch.from_numpy(sol.y[:, -1]) - torch.tensor(land.minimiser, dtype=torch.float64)).norm()))
    got = results[Key("distance_at_end", "flow", "rosenbrock", 1)]
    assert got == pytest.approx(expected, abs=1e-4)
    assert (run_dir / "figures" / "hb_optim_demo.png").stat().st_size > 10_000


def test_nested_spheres_geometry():
    from odekit.data.synthetic import nested_spheres

    x, y = nested_spheres(seed=3)
    r = x.norm(dim=1)
    inner, outer = y[:, 0] < 0, y[:, 0] > 0
    assert int(inner.sum()) == 40 and int(outer.sum()) == 80
    assert r[inner].max() < 0.5 and r[outer].min() > 0.85 and r[outer].max() <= 1.0 + 1e-6
    x2, _ = nested_spheres(seed=3)
    assert torch.equal(x, x2)


@pytest.mark.slow
def test_pointcloud_smoke_records_loss_and_nfe_per_iteration(tmp_path, verdicts_of):
    exp = get("pointcloud")
    run_dir = execute(exp, exp.config("smoke", {"iterations": "4"}), tmp_path, tmp_path)
    verdicts_of(exp, run_dir)
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    for kind in ("node", "anode", "sonode", "hbnode", "ghbnode"):
        history = checkpoint["histories"][f"{kind}/0"]
        assert len(history["loss"]) == 4 and all(n > 0 for n in history["nfe_forward"] + history["nfe_backward"])
        assert history["loss"][-1] < history["loss"][0]  # Adam makes progress on the MSE
    rows = (run_dir / "tables" / "pointcloud.csv").read_text().splitlines()
    assert rows[0].startswith("model,runs,final loss mean") and len(rows) == 6
    for name in ("pointcloud_curves", "pointcloud_evolution"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 10_000


def _write_silverbox(root, rows=200):
    """A small Silverbox file in the real format: quoted header, trailing comma on every line."""
    import math

    folder = root / "silverbox"
    folder.mkdir(parents=True)
    lines = ['"V1","V2",'] + [f"{0.01 * math.sin(0.3 * i):.7f},{0.02 * math.cos(0.2 * i):.7f}," for i in range(rows)]
    (folder / "sb.csv").write_text("\n".join(lines) + "\n")


def test_silverbox_loader_reads_the_real_format(tmp_path):
    from odekit.data.silverbox import load_silverbox, missing

    assert missing(tmp_path)
    _write_silverbox(tmp_path)
    assert missing(tmp_path) == []
    v1, v2 = load_silverbox(tmp_path)
    assert v1.shape == v2.shape == (200,) and v1.dtype == torch.float64
    assert v1[1].item() == pytest.approx(0.01 * __import__("math").sin(0.3), abs=1e-7)


def test_silverbox_real_file(data_root):
    from odekit.data.download import file_digest
    from odekit.data.silverbox import SHA256, load_silverbox

    assert file_digest(data_root / "silverbox" / "sb.csv") == SHA256
    v1, v2 = load_silverbox(data_root, download_if_missing=False)
    assert v1.shape == (131072,)
    assert v1.mean().item() == pytest.approx(0.0062, abs=1e-4) and v2.std().item() == pytest.approx(0.0534, abs=1e-4)


def test_silverbox_download_failure_says_where_to_put_the_file(tmp_path, monkeypatch):
    import urllib.request

    from odekit.data import DataUnavailableError
    from odekit.data.silverbox import load_silverbox

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataUnavailableError, match="silverbox/sb.csv"):
        load_silverbox(tmp_path)


def test_silverbox_growth_smoke(tmp_path, verdicts_of):
    _write_silverbox(tmp_path / "data")
    exp = get("silverbox_growth")
    run_dir = execute(exp, exp.config("smoke"), tmp_path / "runs", tmp_path / "data")
    verdicts_of(exp, run_dir)
    growth = {k.model: v for k, v in read_results(run_dir).items() if k.metric == "log10_mean_h_norm"}
    assert set(growth) == {"node", "anode", "sonode", "hbnode", "ghbnode"}
    # GHBNODE's gate and skip term keep h bounded where HBNODE's grows (Fig. 3.3's point).
    assert growth["ghbnode"] < growth["hbnode"]
    assert (run_dir / "figures" / "silverbox_growth.png").is_file()


def _write_mnist(root):
    """MNIST-format files (40 train, 40 test) whose brightness depends on the class."""
    import gzip

    import numpy as np

    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 40)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        # Class-dependent brightness, so even a few steps of training beat chance.
        pixels = np.clip(labels[:, None, None] * 25 + rng.integers(0, 20, (n, 28, 28)), 0, 255).astype(np.uint8)
        for name, array in ((f"{split}-images-idx3-ubyte.gz", pixels), (f"{split}-labels-idx1-ubyte.gz", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            with gzip.open(folder / name, "wb") as fh:
                fh.write(header + array.tobytes())


@pytest.mark.slow
def test_image_classification_smoke_on_a_mnist_fixture(tmp_path, verdicts_of):
    _write_mnist(tmp_path / "data")
    exp = get("image_classification")
    run_dir = execute(exp, exp.config("smoke"), tmp_path / "runs", tmp_path / "data")
    verdicts_of(exp, run_dir)
    rows = (run_dir / "tables" / "mnist_epochs.csv").read_text().splitlines()
    assert rows[0] == "model,epoch,forward NFE,backward NFE,train s,train loss,test accuracy"
    assert [r.split(",")[0] for r in rows[1:]] == ["NODE", "ANODE", "SONODE", "HBNODE", "GHBNODE"]
    for row in rows[1:]:
        _, epoch, fwd, bwd, seconds, loss, accuracy = row.split(",")
        assert float(fwd) > 0 and float(bwd) > 0 and float(seconds) > 0 and 0 <= float(accuracy) <= 1
    assert (run_dir / "figures" / "mnist_curves.png").is_file()


@pytest.mark.slow
def test_nfe_vs_tolerance_smoke_on_a_mnist_fixture(tmp_path, verdicts_of):
    _write_mnist(tmp_path / "data")
    exp = get("nfe_vs_tolerance")
    run_dir = execute(exp, exp.config("smoke"), tmp_path / "runs", tmp_path / "data")
    verdicts_of(exp, run_dir)
    rows = (run_dir / "tables" / "nfe_vs_tolerance.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 * 2
    for row in rows[1:]:
        _, tol, fwd, bwd, _ = row.split(",")
        assert float(tol) in (0.1, 0.01) and float(fwd) >= 14 and float(bwd) >= 14  # dopri5: ≥ 2 steps
    assert (run_dir / "figures" / "nfe_vs_tolerance.png").is_file()


@pytest.mark.slow
def test_stiff_scalar_smoke(tmp_path, verdicts_of):
    exp = get("stiff_scalar")
    run_dir = execute(exp, exp.config("smoke"), tmp_path, tmp_path)
    verdicts_of(exp, run_dir)
    results = read_results(run_dir)

    def error(solver, h):
        return results[Key("final_error", solver, "eq5.11", h)]

    # Fig 5.2: the proximal scheme approaches exact backward Euler as its inner tolerance shrinks ...
    be, loose, tight = error("backward_euler", 0.01), error("prox_be_eps0.01", 0.01), error("prox_be_eps0.0001", 0.01)
    assert abs(tight - be) < abs(loose - be)
    # ... and at h = 0.05 forward Euler is unstable on eq. 5.11 while backward Euler is not.
    backward = error("backward_euler", 0.05)
    assert backward < 1e-2
    assert error("forward_euler", 0.05) > 100 * backward
    assert (run_dir / "figures" / "fig5_2_error_vs_time.png").stat().st_size > 10_000


def test_seed_moves_the_chapter_4_initialisations_not_the_splits():
    from odekit.experiments.node_classification import label_cells

    experiment = get("grand_labels")
    cells = label_cells(experiment.config("smoke", seed=5), (1,))
    assert {(cell.run, cell.seed) for cell in cells} == {(0, 5), (1, 5)}
    assert {(cell.run, cell.seed) for cell in label_cells(experiment.config("smoke"), (1,))} == {(0, 0), (1, 0)}


def test_stiff_scalar_labels_any_inner_tolerance_a_run_chose():
    labels = get("stiff_scalar").labels
    assert labels.model(Key("final_error", "prox_be_eps1e-08", "eq5.11", 0.01)) == "prox BE, ε=1e-08"
    assert labels.model(Key("final_error", "forward_euler")) == "forward Euler"
    assert labels.model(Key("final_error", "prox_be_epsilon")) == "prox_be_epsilon"  # not an id it makes


@pytest.mark.slow
def test_diffusion1d_smoke(tmp_path, verdicts_of):
    exp = get("diffusion1d")
    run_dir = execute(exp, exp.config("smoke"), tmp_path, tmp_path)
    verdicts_of(exp, run_dir)
    results = read_results(run_dir)
    rows = (run_dir / "tables" / "work_precision.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2 + 1 + 2  # schemes × inner × steps, adaptive BDF, explicit
    table = {tuple(r.split(",")[:2]): r.split(",") for r in rows[1:]}
    lbfgs, dopri5 = table[("backward Euler (lbfgs)", "h=0.025")], table[("dopri5", "rtol=0.001")]
    assert int(lbfgs[3]) < int(dopri5[3]) / 2  # a stiff problem: far fewer evaluations than dopri5 ...
    assert float(lbfgs[2]) < 0.1 and float(dopri5[2]) < 0.1  # ... at a comparable (coarse) error
    assert isinstance(results[Key("inner_iterations_to_1e-8", "lbfgs")], int)
    header = rows[0].split(",")
    for row in table.values():  # a fixed step whose inner solves failed is never reported as a success
        fields = dict(zip(header, row))
        if fields["setting"].startswith("h=") and int(fields["inner failures"]) > 0:
            assert fields["status"] != "success", row
    for figure in ("fig5_3_error_vs_nfe", "fig5_4_inner_convergence", "fig5_5_time_vs_grid"):
        assert (run_dir / "figures" / f"{figure}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_grand_experiments_smoke_on_cora(tmp_path, verdicts_of, data_root):
    from scipy import stats

    for name, tables in (("grand_labels", ("table4_3_labels", "table4_4_4_5_t_tests")),
                         ("grand_depth", ("table4_1_continuous_depth", "table4_1_gnn_layers")),
                         ("grand_variants", ("table4_9_depth", "table4_10_labels")),
                         ("hb_grand", ("hb_grand_depth", "hb_grand_labels", "hb_grand_t_tests", "hb_grand_costs",
                                       "hb_grand_energy"))):
        exp = get(name)
        run_dir = execute(exp, exp.config("smoke"), tmp_path / "runs", data_root)
        verdicts_of(exp, run_dir)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert set(tables) <= set(manifest["tables"]), name
        for figure in manifest["figures"].values():
            assert (run_dir / figure["file"]).stat().st_size > 1000
        accuracies = [v for k, v in read_results(run_dir).items()
                      if k.metric.startswith("accuracy_vs_") and isinstance(v, float)]
        assert accuracies and all(0 <= v <= 100 for v in accuracies), name
        cells = json.loads((run_dir / "checkpoint.json").read_text())["cells"]
        assert all(c["status"] == "ok" for c in cells.values()), name
        if name == "grand_labels":
            # the paired t of Table 4.5 is scipy's over the two smoke splits
            by = {(c["model"], c["run"]): 100 * c["test"] for c in cells.values()}
            expected = stats.ttest_rel([by["grand++-l", r] for r in (0, 1)], [by["grand-l", r] for r in (0, 1)])
            header, *body = (run_dir / "tables" / "table4_4_4_5_t_tests.csv").read_text().splitlines()
            row = dict(zip(header.split(","), body[0].split(",")))
            assert row["pairs"] == "2" and float(row["paired t (eq. 4.19)"]) == pytest.approx(expected.statistic,
                                                                                               abs=0.006)
