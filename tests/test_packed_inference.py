"""k-bit inference from the packed codes: the fp32 table is never built, and every result equals
that of the dequantized float model (the reference)."""
import pytest
import torch

from kbit_dgl.data.kg import KG
from kbit_dgl.eval import evaluate
from kbit_dgl.models import kernels
from kbit_dgl.models.model import build_model
from kbit_dgl.quant import QuantSpec, quantize_model
from kbit_dgl.quant.embedding import PackedRows

MODELS = ["transe", "transe_l2", "rotate", "distmult", "complex", "pairre", "cp", "rescal"]


@pytest.fixture(autouse=True)
def packed_even_when_small(monkeypatch):
    """Score these small tables from their packed codes (by default a table whose fp32 form is small
    is decoded whole)."""
    from kbit_dgl.quant import model

    monkeypatch.setattr(model, "DECODE_BELOW_BYTES", 0)
SPECS = [QuantSpec(4, "int", 8), QuantSpec(3, "quantile", 8, "int8"), QuantSpec(5, "int_asym", 0),
         QuantSpec(2, "float", 16), QuantSpec(16), QuantSpec(2, "pq", 3), QuantSpec(3, "pq", 2)]


def quantized_pair(name, spec, entities=60, relations=5, dim=16, seed=0):
    torch.manual_seed(seed)
    model = build_model(name, entities, relations, dim, 6.0)
    with torch.no_grad():  # spread the rows so that ranks are not all ties
        model.entity.weight.normal_()
    quantized = quantize_model(model, spec)
    return quantized, quantized.dequantized()


def ogb_kg(entities=60, relations=5, queries=40, negatives=30, seed=1):
    generator = torch.Generator().manual_seed(seed)

    def triples(n):
        return torch.stack([torch.randint(entities, (n,), generator=generator),
                            torch.randint(relations, (n,), generator=generator),
                            torch.randint(entities, (n,), generator=generator)], 1)
    split = {"head_neg": torch.randint(entities, (queries, negatives), generator=generator),
             "tail_neg": torch.randint(entities, (queries, negatives), generator=generator).int()}
    test = triples(queries)
    return KG("ogbl-wikikg2", triples(200), test, test, entities, relations, [f"e{i}" for i in range(entities)],
              [f"r{i}" for i in range(relations)], negatives={"valid": split, "test": split})


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.bits}-{s.dtype}")
@pytest.mark.parametrize("name", MODELS)
def test_packed_rows_decode_exactly_the_dequantized_rows(name, spec, monkeypatch):
    if name not in ("transe", "pairre") and spec.bits != 3:  # the compiled decoder for a few, eager for the rest
        monkeypatch.setenv("KBIT_DGL_COMPILE", "0")
    quantized, reference = quantized_pair(name, spec)
    source = quantized.candidate_rows()
    assert isinstance(source, PackedRows) and source.shape == (60, quantized.decoder.entity_dim)
    ids = torch.tensor([[3, 0, 59], [7, 7, 1]])
    assert torch.equal(source[ids], reference.all_entities()[ids])
    block, expected = source.block(10, 25), reference.all_entities()[10:25]
    # compiled, scale * x + offset may become one fused multiply-add, and PairRE's L2 normalisation
    # reduces in another order: within an ulp or two; the ranks below still match exactly
    if spec.dtype == "int_asym" or name == "pairre":
        assert torch.allclose(block, expected, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(block, expected)


@pytest.mark.parametrize("name,compile_kernels", [(name, "0") for name in MODELS]
                         + [(name, "1") for name in ("transe", "rotate", "complex", "pairre")])
def test_scoring_candidate_ids_from_packed_codes_matches_the_dequantized_table(name, compile_kernels, monkeypatch):
    monkeypatch.setenv("KBIT_DGL_COMPILE", compile_kernels)
    quantized, reference = quantized_pair(name, QuantSpec(4, "int", 8))
    rows, table = quantized.candidate_rows(), reference.all_entities()
    generator = torch.Generator().manual_seed(2)
    anchors, relations = torch.randint(60, (9,), generator=generator), torch.randint(5, (9,), generator=generator)
    ids = torch.randint(60, (9, 13), generator=generator)
    for direction in ("tail", "head"):
        got = quantized.score_candidate_ids(rows[anchors], relations, rows, ids, direction)
        expected = reference.score_candidate_ids(table[anchors], relations, table, ids, direction)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), direction


@pytest.mark.parametrize("spec", [QuantSpec(4, "quantile", 8), QuantSpec(2, "pq", 4)], ids=["nf4", "pq2"])
@pytest.mark.parametrize("name", MODELS)
def test_ogb_protocol_on_packed_codes_gives_the_dequantized_models_metrics(name, spec):
    kg = ogb_kg()
    quantized, reference = quantized_pair(name, spec)
    got, expected = evaluate(quantized, kg, "test"), evaluate(reference, kg, "test")
    for key in ("mrr", "hits@1", "hits@3", "hits@10", "mr"):
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_packed_kernel_cache_does_not_keep_a_table_alive():
    import gc
    import weakref

    quantized, _ = quantized_pair("transe", QuantSpec(4, "int", 8), seed=5)
    rows = quantized.candidate_rows()
    rows_ref = weakref.ref(quantized.entity.codes)
    quantized.score_candidate_ids(rows[torch.tensor([1])], torch.tensor([0]), rows, torch.tensor([[2, 3]]))
    del quantized, rows
    gc.collect()
    assert rows_ref() is None
    assert any(isinstance(key, tuple) and key[1][0] == "packed" for key in kernels._COMPILED) \
        or not kernels.compile_enabled()


def filtered_kg(entities=60, relations=5, seed=3):
    generator = torch.Generator().manual_seed(seed)

    def triples(n):
        return torch.unique(torch.stack([torch.randint(entities, (n,), generator=generator),
                                         torch.randint(relations, (n,), generator=generator),
                                         torch.randint(entities, (n,), generator=generator)], 1), dim=0)
    return KG("random", triples(300), triples(30), triples(30), entities, relations,
              [f"e{i}" for i in range(entities)], [f"r{i}" for i in range(relations)])


@pytest.mark.parametrize("name", MODELS)
def test_filtered_ranks_from_packed_blocks_equal_the_dequantized_models(name, monkeypatch):
    from kbit_dgl.eval import ranking

    monkeypatch.setattr(ranking, "BLOCK_ROWS", 7)  # many blocks, targets and filtered pairs in each
    kg = filtered_kg()
    quantized, reference = quantized_pair(name, QuantSpec(4, "int", 8))
    got = ranking.filtered_ranks(quantized, kg.test, kg.filter_index, batch_size=11)
    expected = ranking.filtered_ranks(reference, kg.test, kg.filter_index, batch_size=11)
    for direction in ("tail", "head"):
        assert torch.equal(got[direction], expected[direction]), direction


@pytest.mark.parametrize("name", ["transe", "transe_l2", "distmult", "complex"])
def test_a_few_queries_score_packed_rows_by_id_with_the_dequantized_models_ranks(name, monkeypatch):
    """Batches of up to BY_ID_QUERIES queries score the codes by id in the native kernel (targets too)."""
    from kbit_dgl.eval import ranking
    from kbit_dgl.models import native

    calls = []
    real = native.packed_ids
    monkeypatch.setattr(native, "packed_ids", lambda *args: calls.append(args[0]) or real(*args))
    monkeypatch.setattr(ranking, "BLOCK_ROWS", 7)
    kg = filtered_kg()
    quantized, reference = quantized_pair(name, QuantSpec(4, "int", 8))
    got = ranking.filtered_ranks(quantized, kg.test, kg.filter_index, batch_size=ranking.BY_ID_QUERIES)
    expected = ranking.filtered_ranks(reference, kg.test, kg.filter_index, batch_size=ranking.BY_ID_QUERIES)
    assert calls and set(calls) == {quantized.decoder.candidate_kernel}
    for direction in ("tail", "head"):
        assert torch.equal(got[direction], expected[direction]), direction


@pytest.mark.parametrize("name", ["transe", "rotate", "complex"])
def test_top_k_from_packed_blocks_equals_the_dequantized_models(name, monkeypatch):
    from kbit_dgl.eval import ranking
    from kbit_dgl.predict import predict_many

    monkeypatch.setattr(ranking, "BLOCK_ROWS", 9)
    kg = filtered_kg()
    quantized, reference = quantized_pair(name, QuantSpec(4, "quantile", 8))
    queries = [("e1", "r0", None), (None, "r2", "e5"), ("e7", "r4", None)]
    for exclude in (False, True):
        got = predict_many(quantized, kg, queries, top=12, exclude_known=exclude, batch_size=2)
        expected = predict_many(reference, kg, queries, top=12, exclude_known=exclude)
        assert [[row["id"] for row in rows] for rows in got] == [[row["id"] for row in rows] for rows in expected]
        for rows, reference_rows in zip(got, expected):
            assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in reference_rows], abs=1e-5)
    known = predict_many(reference, kg, [("e1", "r0", None)], top=60)[0]
    filtered = predict_many(reference, kg, [("e1", "r0", None)], top=60, exclude_known=True)[0]
    assert {row["id"] for row in known if row["known"]} and not any(row["known"] for row in filtered)
    assert len(filtered) == 60 - sum(1 for row in known if row["known"])


def test_queries_file_errors_name_the_line(tmp_path):
    from kbit_dgl.errors import KGFormatError, UnknownNameError
    from kbit_dgl.predict import predict_many, read_queries

    kg = filtered_kg()
    path = tmp_path / "queries.tsv"
    path.write_text("# a comment\ne1\tr0\t?\n\n?\tr2\te5\n")
    queries, sources = read_queries(str(path))
    assert queries == [("e1", "r0", None), (None, "r2", "e5")] and sources[1] == f"{path} line 4"
    for text, line in (("e1\tr0\t?\ne1\tr0\n", 2), ("e1\tr0\te2\n", 1), ("?\tr0\t?\n", 1)):
        path.write_text(text)
        with pytest.raises(KGFormatError, match=f"line {line}: expected head<TAB>relation<TAB>"):
            read_queries(str(path))
    path.write_text("e1\tr0\t?\nnobody\tr0\t?\n")
    queries, sources = read_queries(str(path))
    with pytest.raises(UnknownNameError, match="line 2: .*no entity named 'nobody'"):
        predict_many(build_model("transe", 60, 5, 8, 6.0), kg, queries, sources=sources)
    path.write_text("e1\tno_such_relation\t?\n")
    with pytest.raises(UnknownNameError, match="line 1: .*no relation named"):
        predict_many(build_model("transe", 60, 5, 8, 6.0), kg, *read_queries(str(path))[:1],
                     sources=read_queries(str(path))[1])
    with pytest.raises(KGFormatError, match="cannot read"):
        read_queries(str(tmp_path / "missing.tsv"))


def test_small_tables_are_decoded_whole_and_large_ones_stay_packed(monkeypatch):
    from kbit_dgl.quant import model

    quantized, reference = quantized_pair("transe", QuantSpec(4, "int", 8))
    assert isinstance(quantized.candidate_rows(), PackedRows)
    monkeypatch.setattr(model, "DECODE_BELOW_BYTES", 4 * 60 * 16)
    rows = quantized.candidate_rows()
    assert isinstance(rows, torch.Tensor) and torch.equal(rows, reference.all_entities())


def test_serving_benchmark_measures_each_bit_width_in_its_own_process(tmp_path):
    from kbit_dgl.bench.serving import measure_in_child, prepare_in_child, serving_table

    prepare_in_child(str(tmp_path), "transe", 300, 16, [32, 4])
    records = [measure_in_child(task, str(tmp_path), "transe", 300, 16, bits, 20, singles=3, batch_size=8)
               for task in ("topk", "ogb") for bits in (32, 4)]
    assert all(record["queries_per_second"] > 0 and record["peak_rss_mib"] > 0 for record in records)
    assert records[1]["entity_table_bytes"] < records[0]["entity_table_bytes"] / 6
    assert set(records[0]["single_query_latency_ms"]) == {"p50", "p95", "p99"}
    table = serving_table(records)
    assert "| 300 | 16 | topk | 4 |" in table and "1.00x" in table


@pytest.mark.parametrize("name", ["transe_l2", "distmult", "complex"])
def test_search_query_is_the_decoders_ranking(name):
    quantized, model = quantized_pair(name, QuantSpec(8, "int", 8))
    rows = model.all_entities()
    anchors, relations = torch.tensor([1, 4, 9]), torch.tensor([0, 3, 2])
    for direction in ("tail", "head"):
        vectors, metric = model.search_query(rows[anchors], relations, direction)
        scores = model.score_candidates(rows[anchors], relations, rows, direction)
        if metric == "l2":
            expected = model.decoder.gamma - torch.cdist(vectors, rows)
        else:
            expected = vectors @ rows.T
        assert torch.allclose(scores, expected, atol=1e-4)
    assert build_model("rotate", 10, 2, 8, 6.0).search_query(torch.zeros(1, 8), torch.tensor([0])) is None


def test_faiss_comparison_reports_recall_mrr_and_bytes():
    pytest.importorskip("faiss")
    from kbit_dgl.bench.vector_search import compare, comparison_table

    kg = filtered_kg(entities=300, relations=4)
    torch.manual_seed(0)
    model = build_model("distmult", 300, 4, 32, 6.0).eval()
    records = compare(model, kg.test, [8, 4], kg=kg, train_rows=300)
    by_method = {record["method"]: record for record in records}
    assert by_method["faiss IndexFlat (exact)"]["recall@10"] == 1.0
    assert by_method["ours 8-bit int"]["recall@10"] > 0.9 and by_method["ours 8-bit NF"]["bytes_per_entity"] < 40
    assert by_method["faiss IndexFlat (exact)"]["filtered_mrr"] == pytest.approx(by_method["fp32 (ours, exact)"]
                                                                                 ["filtered_mrr"], abs=1e-4)
    assert any(method.startswith("faiss PQ M=") for method in by_method)
    assert "| ours 4-bit NF |" in comparison_table(records)
