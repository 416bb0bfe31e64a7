"""Scaling analysis: power-law fits, held-out validation, the bit-optimal frontier, sweep smoke runs."""
import math
import os

import numpy as np
import pytest
import torch

from kbit_dgl.data.synthetic import generate_kg
from kbit_dgl.provenance import project_root
from kbit_dgl.scaling.fit import fit_power_law, holdout_error, saturating_power_law
from kbit_dgl.scaling.frontier import aggregate_points, bit_optimal_table, budget_grid, frontier_summary
from kbit_dgl.scaling.kbit_report import frontier_verdict, frontiers, write_outputs
from kbit_dgl.scaling.kbit_sweep import SweepSettings, parse_dim_seeds, run_sweep
from kbit_dgl.scaling.law_report import render_readme
from kbit_dgl.scaling.law_sweep import ScalingSettings, run_scaling


# ---- fits --------------------------------------------------------------------------------------
@pytest.mark.parametrize("a, b, c", [(2.0, 0.5, 0.3), (-0.8, 0.35, 0.45)])  # a falling loss, a rising MRR
def test_saturating_fit_recovers_noisy_power_law(a, b, c):
    rng = np.random.default_rng(0)
    x = np.repeat([16, 32, 64, 128, 256, 512, 1024, 2048], 3).astype(float)
    noise = 0.002
    y = saturating_power_law(x, a, b, c) + rng.normal(0, noise, x.size)
    fit = fit_power_law(x, y, "saturating")
    for name, true in (("a", a), ("b", b), ("c", c)):
        assert fit.params[name] == pytest.approx(true, rel=0.15, abs=0.02), name
        assert math.isfinite(fit.stderr[name]) and fit.stderr[name] > 0
        assert abs(fit.params[name] - true) < 4 * fit.stderr[name] + 1e-9, name  # errors are honest
    assert fit.rmse == pytest.approx(noise, rel=0.5)
    assert fit.determined


def test_plain_power_law_fit_over_decades():
    rng = np.random.default_rng(1)
    x = np.geomspace(1e2, 1e7, 12)  # training steps: the x normalisation keeps this well conditioned
    y = 5.0 * x ** -0.3 * np.exp(rng.normal(0, 0.01, x.size))
    fit = fit_power_law(x, y, "power_law")
    assert fit.params["a"] == pytest.approx(5.0, rel=0.1)
    assert fit.params["b"] == pytest.approx(0.3, abs=0.01)
    assert fit.predict(1e8) == pytest.approx(5.0 * 1e8 ** -0.3, rel=0.05)


def test_fit_with_as_many_points_as_parameters_has_infinite_errors():
    x = np.array([10.0, 100.0, 1000.0])
    fit = fit_power_law(x, saturating_power_law(x, 3.0, 0.5, 1.0), "saturating")
    assert fit.predict(x) == pytest.approx(saturating_power_law(x, 3.0, 0.5, 1.0), rel=1e-6)
    assert all(math.isinf(v) for v in fit.stderr.values())
    assert fit.to_dict()["stderr"] == {"a": None, "b": None, "c": None}
    with pytest.raises(ValueError, match="distinct x"):
        fit_power_law([1.0, 2.0], [1.0, 0.5], "saturating")


def test_holdout_error_is_prediction_minus_mean_at_the_largest_x():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0])
    y = saturating_power_law(x, 2.0, 0.7, 0.5)
    y[-2:] += [0.10, 0.20]  # the two points at the largest x sit 0.15 above the law on average
    result = holdout_error(x, y, "saturating")
    expected = saturating_power_law(32.0, 2.0, 0.7, 0.5)
    assert result["heldout_x"] == 32.0
    assert result["predicted"] == pytest.approx(expected, rel=1e-6)  # the reduced fit is exact
    assert result["observed"] == pytest.approx(expected + 0.15)
    assert result["abs_error"] == pytest.approx(0.15, rel=1e-5)
    assert result["rel_error"] == pytest.approx(0.15 / (expected + 0.15), rel=1e-5)
    assert result["observed_std"] == pytest.approx(np.std([0.10, 0.20], ddof=1))
    assert result["fit"]["num_points"] == 5


# ---- frontier ----------------------------------------------------------------------------------
def _point(dim, bits, mrr, seed=0, dtype="int"):
    return {"dim": dim, "bits": bits, "dtype": dtype, "block": 64, "seed": seed, "mrr": mrr,
            "total_bits": dim * bits * 100}


def test_bit_optimal_table_picks_the_best_config_within_each_budget():
    points = []
    for seed, noise in enumerate((-0.005, 0.0, 0.005)):
        points += [_point(16, 32, 0.30 + noise, seed),   # 51,200 bits
                   _point(64, 4, 0.33 + noise, seed),    # 25,600 bits: more dims at 4 bits beat fp32
                   _point(128, 4, 0.36 + noise, seed),   # 51,200 bits
                   _point(64, 8, 0.34 + noise, seed),    # 51,200 bits
                   _point(32, 2, 0.20 + noise, seed)]    # 6,400 bits
    rows = aggregate_points(points)
    assert {(r["dim"], r["bits"]): r["num_seeds"] for r in rows}[(64, 4)] == 3
    assert {(r["dim"], r["bits"]): r["mean"] for r in rows}[(64, 4)] == pytest.approx(0.33)
    table = bit_optimal_table(points, budgets=[5000, 6400, 30000, 60000])
    assert [row["budget_bits"] for row in table] == [6400, 30000, 60000]  # nothing fits 5,000 bits
    assert [(row["dim"], row["bits"]) for row in table] == [(32, 2), (64, 4), (128, 4)]
    top = table[-1]
    assert top["mean"] == pytest.approx(0.36) and top["std"] == pytest.approx(0.005)
    assert (top["other_k"]["dim"], top["other_k"]["bits"]) == (64, 8)
    assert top["margin"] == pytest.approx(0.02)
    assert top["margin_sigmas"] == pytest.approx(0.02 / math.sqrt(2 * 0.005 ** 2 / 3))
    assert table[0]["best_4bit"] is None and table[1]["gap_4bit"] == pytest.approx(0.0)
    summary = frontier_summary(table)
    assert summary["wins_by_bits"] == {2: 1, 4: 2} and summary["four_bit_wins"] == 2 and summary["seeded"]


def test_a_single_seed_side_gets_no_sigmas_its_noise_is_unknown_not_zero():
    points = [_point(64, 4, 0.33 + noise, seed) for seed, noise in enumerate((-0.005, 0.0, 0.005))]
    points.append(_point(256, 1, 0.35, 0))  # 25,600 bits like d64 4-bit, one seed
    row = bit_optimal_table(points, budgets=[30000])[0]
    assert (row["dim"], row["bits"], row["num_seeds"]) == (256, 1, 1)
    assert row["margin"] == pytest.approx(0.02) and row["margin_sigmas"] is None
    assert row["gap_4bit_sigmas"] is None
    assert frontier_summary([row])["clear_wins"] == 0


def test_budget_grid_spans_the_points_on_powers_of_two():
    assert budget_grid([3000, 50000]) == [4096, 8192, 16384, 32768, 65536]
    assert budget_grid([4096, 4096]) == [4096]


# ---- sweep smoke runs on a tiny generated KG -----------------------------------------------------
@pytest.fixture(scope="module")
def tiny_kg():
    return generate_kg(num_persons=60, num_cities=6, num_countries=2, seed=3)


@pytest.fixture(scope="module")
def small_kg():
    # 264 entities: enough rows that codes, not the stored codebooks (255 floats per table at 8 bits),
    # decide the bytes, as in any real KG; on a 70-entity table 8 bits would take more than fp16
    return generate_kg(num_persons=240, num_cities=20, num_countries=4, seed=0)


FAST = ["train.batch_size=64", "train.num_negatives=8", "train.valid_every=5"]


@pytest.fixture
def one_thread():
    """The sweeps run with --threads 1 here (tiny tensors: more threads only wait on each other,
    badly so on a loaded machine); torch's process-wide setting is restored afterwards."""
    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def test_kbit_sweep_points_grow_in_bits_with_k(small_kg, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("KBIT_DGL_COMPILE", "0")  # eager kernels: no compile time in a unit test
    settings = SweepSettings(
        datasets=["synthetic"], models=["transe", "rotate"], dims=[32], seeds=[0], max_epochs=1,
        bits=[1, 2, 4, 8, 16, 32], dtypes=["int", "quantile"], blocks=[8, 64], block_bits=4, qat=True, qat_bits=[2],
        timing=True, timing_repeats=1, overrides=FAST, threads=one_thread, runs_dir=str(tmp_path / "runs"),
        out_dir=str(tmp_path / "out"))
    record = run_sweep(settings, load_kg=lambda name: small_kg)
    points = record["points"]
    main = [p for p in points if p["method"] == "ptq" and p["sweep"] == "main"]
    assert len(main) == 2 * (4 * 2 + 2)  # models x (quantised k x dtypes + fp16 + fp32)
    for model in ("transe", "rotate"):
        for dim in (32,):
            for dtype in ("int", "quantile"):
                curve = sorted((p["bits"], p["total_bits"]) for p in main if p["model"] == model
                               and p["dim"] == dim and p["dtype"] in (dtype, "fp"))
                totals = [total for _, total in curve]
                assert totals == sorted(totals) and len(set(totals)) == len(totals), (model, dim, dtype, curve)
            fp32 = next(p for p in main if p["model"] == model and p["dim"] == dim and p["bits"] == 32)
            assert fp32["total_bytes"] == fp32["fp32_bytes"] + fp32["metadata_bytes"]
            assert fp32["mrr_ratio_to_fp32"] == 1.0 and 0 < fp32["mrr"] <= 1
    # the same run, trained once, gives the trainer's own test MRR at 32 bits
    run = next(p for p in main if p["model"] == "transe" and p["dim"] == 32 and p["bits"] == 32)["run"]
    import json
    with open(os.path.join(project_root(), run, "metrics.json")) as handle:
        assert json.load(handle)["test"]["mrr"] == pytest.approx(
            next(p for p in main if p["run"] == run and p["bits"] == 32)["mrr"], abs=1e-12)
    blocks = {(p["dtype"], p["block_width"]) for p in points if p["sweep"] == "block" and p["model"] == "transe"}
    assert blocks == {("int", 8), ("quantile", 8)}  # 64 is the main block; 32 = one per row is the same
    assert {p["method"] for p in points} == {"ptq", "qat"}
    assert len(record["eval_timing"]) == 2 and record["eval_timing"][0]["ratio_quantized_to_fp32"] > 0
    out = tmp_path / "out"
    for name in ("points.csv", "points.json", "README.md", "frontier-synthetic-transe-quantile.png",
                 "blocks-synthetic-rotate.png"):
        assert (out / name).stat().st_size > 0, name
    readme = (out / "README.md").read_text()
    # one dim: no frontier verdict, only what k bits cost at that size
    assert "Not answered here: with one dim (32)" in readme and "Does 4 bits win like for LLMs?" not in readme
    # two dims: the budget table and the verdict
    wider = [dict(p, dim=64, total_bits=2 * p["total_bits"], mrr=min(1.0, p["mrr"] + 0.01)) for p in main]
    both = main + wider
    write_outputs(dict(record, points=both, frontier=frontiers(both)), str(tmp_path / "two"))
    readme = (tmp_path / "two" / "README.md").read_text()
    assert "Does 4 bits win like for LLMs?" in readme and "| budget (bits) | best (dim, k, dtype)" in readme
    # resumable: a second call reuses every run and every cached point
    again = run_sweep(settings, load_kg=lambda name: small_kg)
    assert [p["mrr"] for p in again["points"]] == [p["mrr"] for p in points]
    # QAT keeps the relation table at k: its PTQ baselines may not get more relation bits
    settings.relation_min_bits = 8
    with pytest.raises(ValueError, match="--qat with --relation-bits 8"):
        run_sweep(settings, load_kg=lambda name: small_kg)


def test_a_sweep_reuses_an_earlier_sweeps_points_only_on_the_same_settings_and_data(tiny_kg, small_kg, tmp_path,
                                                                                    monkeypatch, one_thread):
    """--reuse-points: a dim measured by an earlier sweep needs no run folder; other settings, other data or
    missing specs are refused, so a reused number is always one this sweep would have measured."""
    import dataclasses
    import json
    import shutil

    monkeypatch.setenv("KBIT_DGL_COMPILE", "0")

    def settings(dims, out, **extra):
        return SweepSettings(datasets=["synthetic"], models=["transe"], dims=dims, seeds=[0], max_epochs=1,
                             bits=[2, 4, 32], dtypes=["quantile"], blocks=[], timing=False, overrides=FAST,
                             threads=one_thread, runs_dir=str(tmp_path / "runs"), out_dir=str(tmp_path / out), **extra)

    first = run_sweep(settings([16], "first"), load_kg=lambda name: small_kg)
    earlier = str(tmp_path / "first" / "points.json")
    shutil.rmtree(tmp_path / "runs")  # the d16 run is gone: only its points remain
    both = run_sweep(settings([8, 16], "both", reuse_points=[earlier]), load_kg=lambda name: small_kg)
    d16 = [p for p in both["points"] if p["dim"] == 16]
    assert [(p["bits"], p["mrr"]) for p in d16] == [(p["bits"], p["mrr"]) for p in first["points"]]
    assert all(p["reused_from"] == earlier for p in d16)
    assert not (tmp_path / "runs" / "synthetic-transe-d16-s0").exists()
    assert {p["dim"] for p in both["points"]} == {8, 16} and "reused_from" not in both["points"][0]
    with pytest.raises(ValueError, match="measured on other data"):
        run_sweep(settings([16], "other", reuse_points=[earlier]), load_kg=lambda name: tiny_kg)
    with pytest.raises(ValueError, match="relation_min_bits"):
        run_sweep(settings([16], "other", reuse_points=[earlier], relation_min_bits=8),
                  load_kg=lambda name: small_kg)
    more_bits = dataclasses.replace(settings([16], "other", reuse_points=[earlier]), bits=[2, 3, 4, 32])
    with pytest.raises(ValueError, match="lacks quantile k=3"):
        run_sweep(more_bits, load_kg=lambda name: small_kg)
    record = json.loads((tmp_path / "first" / "points.json").read_text())
    for point in record["points"]:
        del point["data_fingerprint"]  # a file from before fingerprints: its data cannot be told
    (tmp_path / "old.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="carry no data fingerprint"):
        run_sweep(settings([16], "other", reuse_points=[str(tmp_path / "old.json")]), load_kg=lambda name: small_kg)


def test_a_sweep_can_train_more_seeds_at_some_dims(small_kg, tmp_path, monkeypatch, one_thread):
    """dim_seeds: three seeds where a run is cheap, one where it is not, in one point set."""
    monkeypatch.setenv("KBIT_DGL_COMPILE", "0")
    settings = SweepSettings(datasets=["synthetic"], models=["transe"], dims=[8, 16], seeds=[0], dim_seeds={8: [0, 1]},
                             max_epochs=1, bits=[4, 32], dtypes=["quantile"], blocks=[], timing=False, overrides=FAST,
                             threads=one_thread, runs_dir=str(tmp_path / "runs"), out_dir=str(tmp_path / "out"))
    record = run_sweep(settings, load_kg=lambda name: small_kg)
    seeds = {(p["dim"], p["seed"]) for p in record["points"]}
    assert seeds == {(8, 0), (8, 1), (16, 0)}
    with pytest.raises(ValueError, match=r"dims \[32\] that are not swept"):
        SweepSettings(dims=[8, 16], dim_seeds={32: [0]}).resolved()
    with pytest.raises(ValueError, match="no seed"):
        SweepSettings(dims=[8, 16], dim_seeds={8: []}).resolved()
    assert parse_dim_seeds(["125=0,1,2", "500=0"]) == {125: [0, 1, 2], 500: [0]}
    for bad in ("125", "125=", "x=0", "125=0,a"):
        with pytest.raises(ValueError, match="expected DIM=SEED"):
            parse_dim_seeds([bad])


def test_scaling_steps_axis_equals_an_uninterrupted_run(tiny_kg, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("KBIT_DGL_COMPILE", "0")
    settings = ScalingSettings(
        datasets=["synthetic"], models=["transe"], seeds=[0], dims=[4, 8, 16], fractions=[0.5, 1.0],
        data_dim=8, steps_dim=8, steps_epochs=[1, 2], max_epochs=2, overrides=FAST, threads=one_thread,
        dim_runs_dir=str(tmp_path / "kbit"), runs_dir=str(tmp_path / "scaling"), out_dir=str(tmp_path / "out"))
    record = run_scaling(settings, load_kg=lambda name: tiny_kg)
    points = record["points"]
    by_axis = {axis: [p for p in points if p["axis"] == axis] for axis in ("dim", "data", "steps")}
    assert [p["x"] for p in by_axis["dim"]] == [4, 8, 16]
    assert [p["num_train"] for p in by_axis["data"]] == [round(f * len(tiny_kg.train)) for f in (0.5, 1.0)]
    steps = by_axis["steps"]
    assert [p["epochs"] for p in steps] == [1, 2] and steps[0]["x"] < steps[1]["x"]
    # the last stage of the resumed run is the model of a 2-epoch run validated only at its end
    dim8 = next(p for p in by_axis["dim"] if p["x"] == 8)
    assert steps[-1]["mrr"] == pytest.approx(dim8["mrr"], abs=1e-12)
    with open(tmp_path / "out" / "fits.json") as handle:
        import json
        fits = json.load(handle)["fits"]
    assert len(fits) == 3 * 2 * 2  # axes x metrics x laws
    dim_fit = next(f for f in fits if f["axis"] == "dim" and f["metric"] == "mrr" and f["law"] == "power_law")
    assert "fit" in dim_fit and dim_fit["holdout"]["heldout_x"] == 16
    saturating = next(f for f in fits if f["axis"] == "dim" and f["metric"] == "mrr" and f["law"] == "saturating")
    assert "distinct x" in saturating["holdout_error"]  # 2 points left for 3 parameters: reported, not hidden
    readme = (tmp_path / "out" / "README.md").read_text()
    assert readme.count("predicts") >= 1 and "**data**: fractions [0.5, 1.0]" in readme
    assert "**data**" not in render_readme({**record, "settings": {**record["settings"], "axes": ["dim"]}}, fits, {})


@pytest.mark.parametrize("name", ["transe", "rotate"])
def test_relation_min_bits_keeps_the_relation_table_precise(small_kg, name):
    from kbit_dgl.models.model import build_model
    from kbit_dgl.quant import QuantSpec, quantize_model
    from kbit_dgl.quant.model import table_specs
    from kbit_dgl.scaling.kbit import evaluate_specs
    from kbit_dgl.scaling.metrics import rank_metrics

    torch.manual_seed(0)
    model = build_model(name, small_kg.num_entities, small_kg.num_relations, 16, 6.0).eval()
    specs = [("int", QuantSpec(4, "int", 8)), ("int", QuantSpec(8, "int", 8))]
    plain = evaluate_specs(model, small_kg, specs, {})
    kept = evaluate_specs(model, small_kg, specs, {}, relation_min_bits=8)
    assert [p["relation_bits"] for p in plain] == [4, 8] and [p["relation_bits"] for p in kept] == [8, 8]
    assert kept[0]["entity_bytes"] == plain[0]["entity_bytes"]
    assert kept[0]["relation_bytes"] > plain[0]["relation_bytes"]
    assert kept[1]["mrr"] == plain[1]["mrr"] and kept[1]["total_bytes"] == plain[1]["total_bytes"]  # k >= 8: as is
    # the point is the model with 4-bit entities and 8-bit relations (RotatE: 8-bit phases), ranked
    relation_spec = table_specs(model.decoder, QuantSpec(8, "int", 8))[1]
    reference = quantize_model(model, QuantSpec(4, "int", 8), relation_spec)
    assert kept[0]["relation_bytes"] == reference.byte_report()["relation"]["total"]
    assert kept[0]["mrr"] == rank_metrics(reference, small_kg, "test")["mrr"]


@pytest.mark.parametrize("name", ["transe", "rotate", "complex"])
def test_relation_table_spec_at_more_bits(name):
    """The rule pipelines/relation_bits.py uses: 16 / 32 bits are plain floats ("int" spec), RotatE's
    phases stay phases below 16 bits, any other decoder keeps the entity table's data type and block."""
    from kbit_dgl.models.decoders import make_decoder
    from kbit_dgl.quant import QuantSpec
    from kbit_dgl.quant.model import table_specs

    decoder = make_decoder(name, 16, 6.0)
    for dtype in ("int", "quantile"):
        spec = QuantSpec(4, dtype, 64)
        for relation_bits in (8, 16, 32):
            entity, relation = table_specs(decoder, spec, relation_bits)
            if relation_bits in (16, 32):
                expected = QuantSpec(relation_bits, "int", 64)
            else:
                expected = QuantSpec(relation_bits, "phase" if name == "rotate" else dtype, 64)
            assert entity == spec and relation == expected, (dtype, relation_bits)


def test_frontier_verdict_never_says_no_when_4_bits_wins_as_often_as_any_k():
    half = {"four_bit_wins": 2, "budgets": 4, "most_frequent_bits": 4, "seeded": False, "four_bit_tied": 2}
    assert frontier_verdict(half).startswith("Partly: 4 bits wins 2 of 4")
    assert frontier_verdict({**half, "four_bit_wins": 3}).startswith("Yes")
    behind = {**half, "four_bit_wins": 1, "four_bit_tied": 1, "most_frequent_bits": 5}
    assert frontier_verdict(behind) == ("No: here k = 5 is bit-optimal most often, and 4 bits wins 1 of 4 "
                                                   "(single seed: the margins have no error bars).")
    assert "measurably behind" in frontier_verdict({**behind, "seeded": True})
    assert frontier_verdict({**behind, "seeded": True, "four_bit_tied": 3}).startswith("Partly")
