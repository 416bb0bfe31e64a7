"""k-bit quantisation: codebooks, error bounds, bit packing, byte accounting, quantized models, QAT, CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kbit_dgl.cli import main
from kbit_dgl.data.synthetic import generate_kg
from kbit_dgl.errors import ConfigError
from kbit_dgl.eval import evaluate
from kbit_dgl.models.model import build_model
from kbit_dgl.quant import (
    QuantizedEmbedding,
    QuantSpec,
    attach_fake_quant,
    fake_quantize,
    load_quantized_model,
    pack_bits,
    packed_bytes,
    quantize_dequantize,
    quantize_model,
    save_quantized_model,
    saved_tensor_bytes,
    table_nbytes,
    unpack_bits,
)
from kbit_dgl.quant.codebooks import codebook_size, float_codebook, minifloat, normal_float
from kbit_dgl.quant.quantizers import stored_scales
from kbit_dgl.runs import QUANT_INFO, QUANT_MODEL

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)

BITS = list(range(1, 9))
SCALED_DTYPES = ["int", "int_asym", "float", "quantile", "quantile_empirical"]
MODELS = ["transe", "transe_l2", "rotate", "distmult", "complex", "pairre", "cp", "rescal"]
# QLoRA's NF4 table (bitsandbytes' create_normal_map), to 4 decimals.
NF4 = [-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0, 0.0796, 0.1609, 0.2461, 0.3379, 0.4407,
       0.5626, 0.7230, 1.0]


def table(rows=48, cols=200, seed=0):
    """Normal rows with a few large outliers; cols 200 leaves a short last block at B = 64."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(rows, cols, generator=generator)
    values[rows // 2, cols // 3] = 9.0
    values[-1] *= 0.0  # an all-zero row must not divide by zero
    return values


# ---- codebooks ------------------------------------------------------------------------------
def test_codebooks_are_the_published_ones():
    assert torch.allclose(normal_float(4), torch.tensor(NF4), atol=1e-4)
    e2m1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    assert torch.allclose(float_codebook(4), torch.tensor([-v for v in e2m1[:0:-1]] + e2m1) / 6.0)
    e4m3 = minifloat(4, 3)  # bias 7, no inf/NaN codes: max (1 + 7/8) * 2**8 = 480
    assert len(e4m3) == 255 and float(e4m3[-2]) == pytest.approx(448 / 480)
    for bits in BITS:
        for dtype in ("int", "int_asym", "float", "quantile", "phase"):
            spec = QuantSpec(bits, dtype)
            state = QuantizedEmbedding.from_float(table(4, 16), spec).quantized_state()
            assert len(state["codebook"]) == codebook_size(dtype, bits) <= 2 ** bits
            assert bool((state["codebook"].diff() > 0).all())


# ---- bit packing ----------------------------------------------------------------------------
@pytest.mark.parametrize("bits", BITS)
def test_pack_unpack_exact_for_every_k_and_odd_lengths(bits):
    generator = torch.Generator().manual_seed(bits)
    for length in (1, 3, 5, 7, 13, 101, 200, 1001):
        codes = torch.randint(0, 2 ** bits, (3, length), generator=generator)
        packed = pack_bits(codes, bits)
        assert packed.dtype == torch.uint8 and packed.shape == (3, math.ceil(length * bits / 8))
        assert packed.shape[-1] == packed_bytes(length, bits)
        assert torch.equal(unpack_bits(packed, bits, length).long(), codes)
        assert torch.equal(unpack_bits(pack_bits(codes[0], bits), bits, length).long(), codes[0])  # 1-D
    extremes = torch.tensor([0, 2 ** bits - 1] * 4)  # all bits set / clear survive
    assert torch.equal(unpack_bits(pack_bits(extremes, bits), bits, 8).long(), extremes)
    with pytest.raises(ValueError, match="out of range"):
        pack_bits(torch.tensor([2 ** bits]), bits)


def test_packing_is_dense_across_byte_boundaries():
    # 3-bit codes 0b101, 0b011, 0b111 LSB first: bits 1,0,1, 1,1,0, 1,1,1 -> 0b11011101, 0b1
    assert pack_bits(torch.tensor([5, 3, 7]), 3).tolist() == [0b11011101, 0b1]


# ---- round-trip error bounds ----------------------------------------------------------------
def _decode_all(spec, values):
    embedding = QuantizedEmbedding.from_float(values, spec)
    return embedding, embedding.dequantize_all()


def _per_element_scales(embedding, cols):
    scales, offsets = stored_scales(embedding.quantized_state())
    width = embedding.spec.block_width(cols)
    return scales.repeat_interleave(width, 1)[:, :cols], scales


@pytest.mark.parametrize("scale_dtype", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("bits", BITS)
def test_int_absmax_error_at_most_half_a_step(bits, scale_dtype):
    values = table()
    embedding, decoded = _decode_all(QuantSpec(bits, "int", 64, scale_dtype), values)
    absmax, _ = _per_element_scales(embedding, values.shape[1])
    assert bool((absmax >= _blocks_absmax(values, 64) * (1 - 1e-6)).all())  # stored scales never clip
    step = absmax * (1.0 if bits == 1 else 1.0 / (2 ** (bits - 1) - 1))  # k = 1: sign * absmax
    error = (decoded - values).abs()
    bound = step if bits == 1 else step / 2
    assert bool((error <= bound * (1 + 1e-5) + 1e-7).all()), float((error - bound).max())
    assert torch.equal(decoded[-1], torch.zeros(200))  # zero row stays zero


def _blocks_absmax(values, width):
    cols = values.shape[1]
    return torch.stack([values[:, i:i + width].abs().amax(1) for i in range(0, cols, width)], 1) \
        .repeat_interleave(width, 1)[:, :cols]


@pytest.mark.parametrize("dtype", SCALED_DTYPES)
@pytest.mark.parametrize("bits", BITS)
def test_error_within_half_the_largest_codebook_gap(dtype, bits):
    """Every scaled type: |x - x_hat| <= scale * (largest gap between codes) / 2 (plus the ends)."""
    values = table()
    embedding, decoded = _decode_all(QuantSpec(bits, dtype, 64, "fp16"), values)
    scale, _ = _per_element_scales(embedding, values.shape[1])
    book = embedding.codebook
    low_end, high_end = (0.0, 1.0) if dtype == "int_asym" else (-1.0, 1.0)
    reach = max(float(book.diff().max()) / 2, float(book[0]) - low_end, high_end - float(book[-1]))
    error = (decoded - values).abs()
    assert bool((error <= scale * reach * (1 + 1e-5) + 1e-6).all())


@pytest.mark.parametrize("dtype", ["int", "int_asym", "float", "quantile"])
def test_error_shrinks_with_bits_and_blocks(dtype):
    values = table(rows=64, cols=256)
    rmse = [float((_decode_all(QuantSpec(bits, dtype, 64), values)[1] - values).pow(2).mean().sqrt())
            for bits in BITS]
    assert all(a > b for a, b in zip(rmse[1:], rmse[2:])), rmse  # k = 2 .. 8 strictly better each bit
    assert rmse[-1] < 0.02 * float(values.std())
    per_row = float((_decode_all(QuantSpec(4, dtype, 0), values)[1] - values).pow(2).mean())
    per_32 = float((_decode_all(QuantSpec(4, dtype, 32), values)[1] - values).pow(2).mean())
    assert per_32 < per_row  # smaller blocks, smaller error (the outlier spoils only its block)


def test_quantile_types_beat_int_at_4_bits_on_normal_weights():
    values = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))
    mse = {dtype: float((_decode_all(QuantSpec(4, dtype, 64), values)[1] - values).pow(2).mean())
           for dtype in ("int", "float", "quantile")}
    assert mse["quantile"] < mse["int"] and mse["float"] < mse["int"] * 1.5, mse


@pytest.mark.parametrize("bits", BITS)
def test_phases_rounded_on_the_circle(bits):
    phases = torch.linspace(-3 * math.pi, 3 * math.pi, 997).view(1, -1)  # beyond [-pi, pi]: wraps
    embedding, decoded = _decode_all(QuantSpec(bits, "phase"), phases)
    assert embedding.scales is None  # no scale: the grid is fixed
    assert bool(((decoded >= -math.pi) & (decoded < math.pi)).all())
    delta = torch.remainder(decoded - phases + math.pi, 2 * math.pi) - math.pi  # circular difference
    assert float(delta.abs().max()) <= math.pi / 2 ** bits + 1e-5


def test_float_storage_options():
    values = table()
    _, half = _decode_all(QuantSpec(16), values)
    assert torch.equal(half, values.half().float())
    _, full = _decode_all(QuantSpec(32), values)
    assert torch.equal(full, values)


def test_spec_validation():
    for bad in (dict(bits=0), dict(bits=9), dict(bits=4, dtype="int4"), dict(block=-1), dict(scale_dtype="fp8")):
        with pytest.raises(ValueError):
            QuantSpec(**bad)


# ---- byte accounting ------------------------------------------------------------------------
SPECS = [QuantSpec(bits, dtype, block, scale_dtype)
         for bits, dtype, block, scale_dtype in [(1, "int", 32, "fp16"), (3, "int_asym", 64, "int8"),
                                                 (4, "float", 64, "fp16"), (5, "quantile", 0, "fp32"),
                                                 (6, "quantile_empirical", 1024, "int8"), (7, "int", 100, "fp16"),
                                                 (8, "int_asym", 64, "fp32"), (16, "int", 64, "fp16"),
                                                 (32, "int", 64, "fp16"), (2, "pq", 4, "fp16"),
                                                 (3, "pq", 2, "fp16"), (1, "pq", 7, "fp16")]]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.bits}-{s.dtype}-{s.block}-{s.scale_dtype}")
def test_byte_accounting_equals_memory_and_file(spec, tmp_path):
    torch.manual_seed(0)
    model = build_model("rotate", 301, 7, 50, 12.0)  # 50 = 64-unaligned row; odd row counts
    quantized = quantize_model(model, spec)
    for embedding in (quantized.entity, quantized.relation):
        assert embedding.nbytes == embedding.expected_nbytes()["total"] == embedding.nbytes_breakdown()["total"]
        rows, cols = embedding.num_embeddings, embedding.embedding_dim
        assert embedding.nbytes == table_nbytes(rows, cols, embedding.spec)["total"]
    path = str(tmp_path / QUANT_MODEL)
    file_bytes = save_quantized_model(path, quantized, "rotate", 50, 12.0)
    assert saved_tensor_bytes(path) == quantized.nbytes
    overhead = file_bytes - quantized.nbytes
    assert 0 < overhead < 4096, overhead  # the safetensors header (JSON), not data
    loaded = load_quantized_model(path)
    assert torch.equal(loaded.all_entities(), quantized.all_entities())
    assert torch.equal(loaded.relation.dequantize_all(), quantized.relation.dequantize_all())


def test_4bit_blockwise_entity_table_at_most_a_seventh_of_fp32(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("transe", 10_000, 20, 200, 12.0)
    quantized = quantize_model(model, QuantSpec(4, "int", 64, "fp16"))
    entity = quantized.entity.nbytes_breakdown()
    fp32 = 10_000 * 200 * 4
    assert entity["codes"] == 10_000 * 100 and entity["scales"] == 10_000 * 4 * 2  # 4 blocks (64+64+64+8)
    assert entity["total"] <= fp32 / 7
    path = str(tmp_path / QUANT_MODEL)
    file_bytes = save_quantized_model(path, quantized, "transe", 200, 12.0)
    fp32_model = 4 * (model.entity.weight.numel() + model.relation.weight.numel())
    assert file_bytes <= fp32_model / 7  # the whole file, relation table and container included
    with capsys.disabled():
        print(f"\n4-bit int, B=64, fp16 scales, 10000 x 200: entity table {entity['total']} bytes = "
              f"{entity['total'] / fp32:.4f} of fp32 ({8 * entity['total'] / (10_000 * 200):.2f} bits/number); "
              f"file {file_bytes} bytes = {file_bytes / fp32_model:.4f} of fp32")


# ---- quantized models -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_kg():
    return generate_kg(num_persons=60, num_cities=6, num_countries=2, seed=3)


@pytest.mark.parametrize("name", MODELS)
def test_quantized_scores_equal_dequantized_reference_exactly(name, small_kg):
    torch.manual_seed(0)
    model = build_model(name, small_kg.num_entities, small_kg.num_relations, 24, 12.0)
    quantized = quantize_model(model, QuantSpec(3, "quantile", 8, "int8"))
    reference = quantized.dequantized()
    triples = small_kg.split("test")
    assert torch.equal(quantized.score_triples(triples), reference.score_triples(triples))
    ids = torch.tensor([[0, 5], [7, 5]])
    assert torch.equal(quantized.entities(ids), reference.entities(ids))  # gathered == decoded-all rows
    assert torch.equal(quantized.relations(ids[:, 0] % small_kg.num_relations),
                       reference.relations(ids[:, 0] % small_kg.num_relations))
    assert evaluate(quantized, small_kg, "test") == evaluate(reference, small_kg, "test")


def test_rotate_relations_are_quantized_as_phases():
    torch.manual_seed(0)
    quantized = quantize_model(build_model("rotate", 10, 4, 16, 12.0), QuantSpec(2))
    assert quantized.relation.spec.dtype == "phase" and quantized.entity.spec.dtype == "int"
    grid = torch.tensor([-math.pi, -math.pi / 2, 0.0, math.pi / 2])  # 2 bits: four rotations, no scale
    assert set(quantized.relation.dequantize_all().unique().tolist()) <= set(grid.tolist())


# ---- quantization-aware training ------------------------------------------------------------
def test_fake_quantize_passes_gradients_straight_through():
    weight = table(8, 64).requires_grad_(True)
    spec = QuantSpec(2, "int", 32)
    quantized = fake_quantize(weight, spec)
    assert torch.equal(quantized.detach(), quantize_dequantize(weight.detach(), spec))
    upstream = torch.randn(8, 64)
    (quantized * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream)  # identity gradient, not rounding's zero gradient


def test_qat_model_trains_and_matches_its_packed_form(small_kg):
    torch.manual_seed(0)
    model = attach_fake_quant(build_model("rotate", small_kg.num_entities, small_kg.num_relations, 16, 12.0),
                              QuantSpec(3, "float", 8))
    latent = model.entity.parametrizations.weight.original
    before = latent.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = -model.score_triples(small_kg.train[:64]).mean()
    loss.backward()
    assert latent.grad is not None and float(latent.grad.abs().sum()) > 0
    assert float(model.relation.parametrizations.weight.original.grad.abs().sum()) > 0
    optimizer.step()
    assert not torch.equal(latent.detach(), before)
    packed = quantize_model(model, QuantSpec(3, "float", 8))  # quantises the latent tables
    assert torch.equal(packed.all_entities(), model.all_entities().detach())
    assert evaluate(packed, small_kg, "test") == evaluate(model, small_kg, "test")


# ---- CLI ------------------------------------------------------------------------------------
SMALL = ["model.dim=16", "train.batch_size=128", "train.num_negatives=16", "train.max_epochs=2",
         "train.valid_every=1"]


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_cli_quantize_evaluate_predict_round_trip(tsv_folder, tmp_path, capsys):
    run, qrun = str(tmp_path / "run"), str(tmp_path / "q4")
    assert main(["train", "--dataset", str(tsv_folder), "--model", "rotate", "--out", run, "--no-progress",
                 "--set", *SMALL]) == 0
    capsys.readouterr()
    assert main(["evaluate", run]) == 0
    fp32 = _json(capsys)

    assert main(["quantize", run, "--bits", "4", "--block", "8", "--dtype", "quantile", "--out", qrun]) == 0
    printed = _json(capsys)
    info = json.loads((tmp_path / "q4" / QUANT_INFO).read_text())
    assert (info["bits"], info["dtype"], info["block"]) == (4, "quantile", 8)
    assert info["total_bytes"] == info["codes_bytes"] + info["scales_bytes"] + info["metadata_bytes"]
    assert info["fp32_bytes"] == 4 * (133 * 16 + 2 * 9 * 8) and printed["total_bytes"] == info["total_bytes"]
    # 133 rows * 16 * 4 bits = 8 bytes; 2 fp16 scales = 4 bytes; relations (with their reciprocals,
    # model.reciprocal=auto) at the default max(bits, 8) = 8 bits: 2 * 9 rows of 8 phases = 8 bytes
    assert info["tables"]["relation"]["spec"]["bits"] == 8
    assert info["codes_bytes"] == 133 * 8 + 2 * 9 * 8 and info["scales_bytes"] == 133 * 4
    file_bytes = (tmp_path / "q4" / QUANT_MODEL).stat().st_size
    assert info["file"]["bytes"] == file_bytes
    assert saved_tensor_bytes(str(tmp_path / "q4" / QUANT_MODEL)) == info["total_bytes"]
    assert (tmp_path / "q4" / "config.yaml").read_text() == (tmp_path / "run" / "config.yaml").read_text()

    assert main(["evaluate", qrun]) == 0
    from_folder = _json(capsys)
    assert main(["evaluate", run, "--bits", "4", "--block", "8", "--dtype", "quantile"]) == 0
    in_memory = _json(capsys)
    assert from_folder.pop("eval_seconds") >= 0 and in_memory.pop("eval_seconds") >= 0
    assert from_folder == in_memory and from_folder["quant"]["total"] == info["total_bytes"]
    assert abs(from_folder["mrr"] - fp32["mrr"]) < 0.05  # an untrained-ish model: only a sanity bound

    assert main(["evaluate", run, "--bits", "32"]) == 0  # fp32 "quantization" is the float model
    assert _json(capsys)["mrr"] == fp32["mrr"]

    assert main(["predict", qrun, "--head", "person_0", "--relation", "lives_in", "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "top 5 answers to (person_0, lives_in, ?):" and len(lines) == 6

    assert main(["evaluate", qrun, "--bits", "2"]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert main(["quantize", run, "--bits", "2", "--out", qrun]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["quantize", run, "--bits", "12", "--out", str(tmp_path / "bad")]) == 2
    assert "bits must be" in capsys.readouterr().err

    # the small relation table at 4 bits too (phases on a 2^4 grid), or fp16
    for relation_bits, relation_codes in (("4", 2 * 9 * 4), ("16", 2 * 9 * 8 * 2)):
        out = str(tmp_path / f"q4r{relation_bits}")
        assert main(["quantize", run, "--bits", "4", "--block", "8", "--relation-bits", relation_bits,
                     "--out", out]) == 0
        capsys.readouterr()
        info = json.loads((tmp_path / f"q4r{relation_bits}" / QUANT_INFO).read_text())
        assert info["tables"]["entity"]["spec"]["bits"] == 4
        assert info["tables"]["relation"]["spec"]["bits"] == int(relation_bits)
        assert info["tables"]["relation"]["codes"] == relation_codes
        assert info["tables"]["entity"]["codes"] == 133 * 8
        assert main(["evaluate", out]) == 0
        packed = _json(capsys)
        assert main(["evaluate", run, "--bits", "4", "--block", "8", "--relation-bits", relation_bits]) == 0
        in_memory = _json(capsys)
        assert packed["mrr"] == in_memory["mrr"] and packed["quant"]["total"] == info["total_bytes"]


def test_cli_qat_run_quantizes_to_its_validated_model(tsv_folder, tmp_path, capsys):
    run, qrun = str(tmp_path / "qat"), str(tmp_path / "qat-q")
    assert main(["train", "--dataset", str(tsv_folder), "--model", "transe", "--out", run, "--no-progress",
                 "--set", *SMALL, "train.qat_bits=2", "train.qat_block=8"]) == 0
    trained = _json(capsys)
    assert main(["quantize", run, "--bits", "2", "--block", "8", "--out", qrun]) == 0
    capsys.readouterr()
    assert main(["evaluate", qrun]) == 0
    assert _json(capsys)["mrr"] == trained["test"]["mrr"]  # QAT's forward is exactly the packed model


# ---- product quantisation (pq) ---------------------------------------------------------------
def test_pq_codes_sub_vectors_by_nearest_learned_centroid():
    from kbit_dgl.quant.kmeans import kmeans, product_quantize, subvectors

    torch.manual_seed(0)
    table = torch.randn(700, 10)  # 10 = 3 sub-vectors of 4, the last one padded
    codebook, codes = product_quantize(table, 4, 16)
    assert codebook.shape == (3, 16, 4) and codes.shape == (700, 3)
    parts = subvectors(table, 4)
    assert torch.equal(parts[:, 2, 2:], table[:, 9:].expand(-1, 2))  # padding repeats the last number
    for position in range(3):  # every code is its sub-vector's nearest centroid
        distances = torch.cdist(parts[:, position], codebook[position])
        chosen = distances.gather(1, codes[:, position:position + 1]).squeeze(1)
        assert torch.all(chosen <= distances.min(1).values + 1e-5)
    assert torch.equal(product_quantize(table, 4, 16)[1], codes)  # fixed seed: reproducible
    few = torch.randn(1, 5, 2)  # no more points than centroids: each point is a centroid, coding is exact
    assert torch.equal(kmeans(few, 8)[0, :5], few[0])


def test_pq_beats_scalar_codes_at_the_same_bits_on_correlated_rows():
    torch.manual_seed(0)
    latent = torch.randn(4000, 8)
    table = latent.repeat_interleave(4, dim=1) + 0.05 * torch.randn(4000, 32)  # neighbours move together
    errors = {}
    for name, spec in (("pq", QuantSpec(2, "pq", 4)), ("nf", QuantSpec(2, "quantile", 32)),
                       ("int", QuantSpec(2, "int", 32))):
        decoded = QuantizedEmbedding.from_float(table, spec).dequantize_all()
        errors[name] = (decoded - table).square().mean().item()
    assert errors["pq"] < 0.5 * min(errors["nf"], errors["int"]), errors


def test_pq_spec_errors_are_clear():
    with pytest.raises(ConfigError, match="bits x block = 4 x 4"):
        QuantSpec(4, "pq", 4)  # a 16-bit code: 65536 centroids
    with pytest.raises(ValueError, match="depends on the whole table"):
        quantize_dequantize(torch.randn(4, 8), QuantSpec(2, "pq", 4))
    from kbit_dgl.quant.qat import FakeQuantize
    with pytest.raises(ConfigError, match="pq learns its codebook"):
        FakeQuantize(QuantSpec(2, "pq", 4))
    from kbit_dgl.quant.quantizers import default_block
    assert [default_block("pq", bits) for bits in (1, 2, 3, 4, 8)] == [8, 4, 2, 2, 1]
    assert default_block("int", 2) == 64


def test_pq_relation_table_gets_scalar_codes():
    model = build_model("distmult", 300, 5, 16, 12.0)
    quantized = quantize_model(model, QuantSpec(2, "pq", 4))
    assert quantized.entity.spec.dtype == "pq"
    assert (quantized.relation.spec.bits, quantized.relation.spec.dtype) == (8, "int")
    rotate = quantize_model(build_model("rotate", 300, 5, 16, 12.0), QuantSpec(2, "pq", 4))
    assert rotate.relation.spec.dtype == "phase" and rotate.relation.spec.bits == 8


def test_cli_quantize_pq_round_trip(tsv_folder, tmp_path, capsys):
    run, qrun = str(tmp_path / "run"), str(tmp_path / "pq")
    assert main(["train", "--dataset", str(tsv_folder), "--model", "distmult", "--out", run, "--no-progress",
                 "--set", *SMALL]) == 0
    capsys.readouterr()
    assert main(["quantize", run, "--bits", "2", "--dtype", "pq", "--out", qrun]) == 0  # block: 8 // 2 = 4
    capsys.readouterr()
    info = json.loads((tmp_path / "pq" / QUANT_INFO).read_text())
    assert (info["bits"], info["dtype"], info["block"]) == (2, "pq", 4)
    assert info["codes_bytes"] == 133 * 4 + 2 * 9 * 16 and info["scales_bytes"] == 2 * 9 * 2  # 16 / 4 sub-vectors
    assert main(["evaluate", qrun]) == 0
    from_folder = _json(capsys)
    assert main(["evaluate", run, "--bits", "2", "--dtype", "pq"]) == 0
    in_memory = _json(capsys)
    assert from_folder.pop("eval_seconds") >= 0 and in_memory.pop("eval_seconds") >= 0
    assert from_folder == in_memory
    assert main(["quantize", run, "--bits", "4", "--dtype", "pq", "--block", "4", "--out", qrun, "--overwrite"]) == 2
    assert "bits x block = 4 x 4" in capsys.readouterr().err
