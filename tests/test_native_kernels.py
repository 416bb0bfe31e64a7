"""The hand-written CPU kernels (models/csrc/pairwise_cpu.cpp) against the Python expressions."""
import copy
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from kbit_dgl.models import kernels, native

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="no C++ compiler on this machine")


def leaves(seed, *shapes):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, requires_grad=True) for shape in shapes]


def values_and_grads(function, args, weights):
    for arg in args:
        arg.grad = None
    out = function(*args)
    (out * weights).sum().backward()
    return out.detach(), [arg.grad.clone() if arg.grad is not None else None for arg in args]


@needs_compiler
def test_the_extension_builds_where_a_compiler_exists():
    assert native.module() is not None, native._STATE.get("error")


@needs_compiler
@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
@pytest.mark.parametrize("dim", [1, 7, 16, 33, 100])
def test_l1_values_and_gradients_match_the_expression(lead, dim):
    query, candidates = leaves(dim, (*lead, 5, dim), (*lead, 9, dim))
    weights = torch.randn(*lead, 5, 9)
    weights.view(-1)[::3] = 0.0  # zero upstream gradients are skipped by the kernel: still exact
    fast, fast_grads = values_and_grads(lambda q, c: native.pairwise("l1", (q,), (c,)), [query, candidates], weights)
    slow, slow_grads = values_and_grads(kernels._l1, [query, candidates], weights)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("lead", [(), (4,)])
@pytest.mark.parametrize("dim", [1, 5, 16, 50])
def test_complex_l1_values_and_gradients_match_the_expression(lead, dim):
    args = leaves(dim, (*lead, 6, dim), (*lead, 6, dim), (*lead, 11, dim), (*lead, 11, dim))
    weights = torch.randn(*lead, 6, 11)
    fast, fast_grads = values_and_grads(lambda *a: native.pairwise("complex_l1", a[:2], a[2:]), args, weights)
    slow, slow_grads = values_and_grads(kernels._complex_l1, args, weights)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_compiler
def test_equal_rows_give_zero_gradients_as_torch_does():
    """|q - c| at q == c: torch.sgn(0) = 0 for L1; for RotatE the 1e-12 inside the root keeps it finite."""
    query = torch.ones(2, 4, requires_grad=True)
    candidates = torch.ones(3, 4, requires_grad=True)
    native.pairwise("l1", (query,), (candidates,)).sum().backward()
    assert query.grad.abs().max() == 0 and candidates.grad.abs().max() == 0
    parts = [torch.ones(2, 4, requires_grad=True), torch.zeros(2, 4, requires_grad=True),
             torch.ones(3, 4, requires_grad=True), torch.zeros(3, 4, requires_grad=True)]
    out = native.pairwise("complex_l1", parts[:2], parts[2:])
    out.sum().backward()
    assert torch.isfinite(out).all() and float(out.abs().max()) < 1e-4
    assert all(torch.isfinite(p.grad).all() for p in parts)


@needs_compiler
def test_only_the_gradients_asked_for_are_computed():
    query = torch.randn(4, 8, requires_grad=True)
    candidates = torch.randn(6, 8)  # a constant: no gradient wanted
    native.pairwise("l1", (query,), (candidates,)).sum().backward()
    expected = torch.sign(query.detach()[:, None] - candidates[None]).sum(1)
    torch.testing.assert_close(query.grad, expected)


@needs_compiler
def test_non_contiguous_slices_as_rotate_passes_them():
    rows = leaves(0, (3, 5, 20), (3, 7, 20))
    q, c = rows
    fast = native.pairwise("complex_l1", (q[..., :10], q[..., 10:]), (c[..., :10], c[..., 10:]))
    slow = kernels._complex_l1(q[..., :10], q[..., 10:], c[..., :10], c[..., 10:])
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_the_kernels_step_aside_where_they_do_not_apply(monkeypatch):
    q32, c32 = torch.randn(3, 4, 8, requires_grad=True), torch.randn(3, 5, 8)
    assert native.pairwise("l1", (q32.detach(),), (c32,)) is None  # no gradient wanted: the compiled forward
    with torch.no_grad():
        assert native.pairwise("l1", (q32,), (c32,)) is None
    assert native.pairwise("l1", (q32.double(),), (c32.double(),)) is None  # float64
    assert native.pairwise("l1", (q32,), (torch.randn(1, 5, 8),)) is None  # broadcast leading dims
    assert native.pairwise("scaled_l1", (q32, q32), (c32,)) is None  # no kernel for PairRE
    assert native.pairwise("l1", (q32[:, :0],), (c32,)) is None  # empty
    monkeypatch.setenv("KBIT_DGL_NATIVE", "0")
    assert native.pairwise("l1", (q32,), (c32,)) is None
    torch.testing.assert_close(kernels.pairwise_l1(q32, c32), kernels._l1(q32, c32))
    monkeypatch.setenv("KBIT_DGL_NATIVE", "1")
    assert native.pairwise("l1", (q32,), (c32,)) is not None or native.module() is None


def test_a_failed_build_warns_once_and_the_compiled_path_answers(monkeypatch):
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setattr(native, "SOURCE", native.SOURCE.with_name("missing.cpp"))
    query, candidates = torch.randn(3, 8, requires_grad=True), torch.randn(5, 8)
    with pytest.warns(UserWarning, match="could not be built"):
        result = kernels.pairwise_l1(query, candidates)
    torch.testing.assert_close(result, kernels._l1(query, candidates))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels.pairwise_l1(query, candidates)  # no second warning


@needs_compiler
def test_a_lock_left_by_a_killed_build_does_not_hang_the_next_process():
    """torch's load() waits for ever on the build folder's ``lock`` file while it exists; a process
    killed while building leaves it behind (seen once: a benchmark killed in its first step)."""
    from kbit_dgl import compat

    if not compat.cpp_extension_lock_file_blocks():
        pytest.skip("this torch's load() holds an flock on the lock file instead of waiting while it exists")
    assert native.module() is not None
    lock = compat.cpp_extension_build_directory(f"kbit_dgl_pairwise_{native._cpu_signature()}") / "lock"
    lock.touch()
    try:
        code = "import sys; from kbit_dgl.models import native; sys.exit(0 if native.module() is not None else 3)"
        result = subprocess.run([sys.executable, "-c", code], timeout=240, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert not lock.exists()
        assert "did not finish" in result.stderr
    finally:
        lock.unlink(missing_ok=True)


def test_a_lock_file_that_torch_keeps_is_left_alone(monkeypatch, tmp_path):
    """Newer torch (2.15 here) holds an flock on the build folder's ``lock`` file, which the kernel
    releases when its holder dies, and leaves the file behind after every build: there the file is no
    sign of a killed build, and removing it warned in every process that loaded the kernels."""
    from torch.utils import cpp_extension

    monkeypatch.delattr(cpp_extension, "FileBaton", raising=False)  # as in torch 2.15's cpp_extension
    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose=False: str(tmp_path))
    lock = tmp_path / "lock"
    lock.touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with native._one_builder("kbit_dgl_pairwise_test"):
            pass
    assert lock.exists()


@needs_compiler
def test_native_adam_follows_torch_adam_and_shares_its_state():
    from kbit_dgl.train.optim import Adam

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(300, 7, generator=generator)
    grads = [torch.randn(300, 7, generator=generator) for _ in range(6)]
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    fast, slow = Adam([ours], lr=0.01), torch.optim.Adam([theirs], lr=0.01)
    for index, grad in enumerate(grads):
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        if index == 0:
            assert fast._native_ok()
        fast.step()
        slow.step()
    torch.testing.assert_close(ours.data, theirs.data, rtol=1e-5, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(fast.state[ours][key], slow.state[theirs][key], rtol=1e-5, atol=1e-7)
    assert float(fast.state[ours]["step"]) == float(slow.state[theirs]["step"]) == 6
    # a checkpoint of either loads into the other, and they go on together
    resumed = Adam([torch.nn.Parameter(theirs.data.clone())], lr=0.01)
    resumed.load_state_dict(copy.deepcopy(slow.state_dict()))  # as from a checkpoint file, not shared
    param = resumed.param_groups[0]["params"][0]
    param.grad, theirs.grad = grads[0].clone(), grads[0].clone()
    resumed.step()
    slow.step()
    torch.testing.assert_close(param.data, theirs.data, rtol=1e-5, atol=1e-6)


def test_native_sparse_adam_follows_torch_sparse_adam_and_shares_its_state():
    """Row-sparse gradients with repeated ids (summed by coalescing), a step with no rows, both tables."""
    from kbit_dgl.train.optim import SparseAdam

    generator = torch.Generator().manual_seed(0)
    tables = [torch.randn(50, 6, generator=generator), torch.randn(9, 4, generator=generator)]
    ours = [torch.nn.Parameter(t.clone()) for t in tables]
    theirs = [torch.nn.Parameter(t.clone()) for t in tables]
    fast, slow = SparseAdam(ours, lr=0.05), torch.optim.SparseAdam(theirs, lr=0.05)

    def sparse_grad(table, rows):
        ids = torch.tensor(rows).unsqueeze(0)
        return torch.sparse_coo_tensor(ids, torch.randn(len(rows), table.shape[1], generator=generator), table.shape)

    steps = [[3, 7, 3, 49, 0], [], [7, 8, 9, 10], list(range(50)) + [5, 5], [1]]
    for index, rows in enumerate(steps):
        for a, b in zip(ours, theirs):
            grad = sparse_grad(a, [r % a.shape[0] for r in rows])
            a.grad, b.grad = grad.clone(), grad.clone()
        if index == 0:
            assert fast._native_ok()
        fast.step()
        slow.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.data, b.data, rtol=1e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(fast.state[a][key], slow.state[b][key], rtol=1e-4, atol=1e-7)
        assert fast.state[a]["step"] == slow.state[b]["step"] == len(steps)
    resumed = SparseAdam([torch.nn.Parameter(b.data.clone()) for b in theirs], lr=0.05)
    resumed.load_state_dict(copy.deepcopy(slow.state_dict()))
    for a, b in zip(resumed.param_groups[0]["params"], theirs):
        grad = sparse_grad(a, [2, 4, 2])
        a.grad, b.grad = grad.clone(), grad.clone()
    resumed.step()
    slow.step()
    for a, b in zip(resumed.param_groups[0]["params"], theirs):
        torch.testing.assert_close(a.data, b.data, rtol=1e-5, atol=1e-6)


def test_sparse_adam_rows_refuses_row_ids_out_of_range():
    from kbit_dgl.models import native

    kernels = native.module()
    if kernels is None:
        pytest.skip("native kernels unavailable")
    table, state = torch.zeros(5, 3), [torch.zeros(5, 3), torch.zeros(5, 3)]
    with pytest.raises(RuntimeError, match="out of range"):
        kernels.sparse_adam_rows(table, torch.tensor([1, 5]), torch.ones(2, 3), *state, 0.1, 0.9, 0.999, 1e-8, 1)


def _row_sparse(rows, values, shape):
    return torch.sparse_coo_tensor(torch.tensor(rows, dtype=torch.long).unsqueeze(0), values, shape)


@needs_compiler
@pytest.mark.parametrize("native_on", [True, False])
def test_adam_from_row_sparse_gradients_equals_adam_from_their_dense_form(native_on, monkeypatch):
    """Dense Adam on nn.Embedding(sparse=True) gradients: every row moves (untouched rows with a zero
    gradient), a repeated row's values are summed, a step may have no rows; without the kernel the
    gradient is made dense for torch's step."""
    from kbit_dgl.train.optim import Adam

    if not native_on:
        monkeypatch.setattr(native, "module", lambda: None)
    generator = torch.Generator().manual_seed(1)
    tables = [torch.randn(40, 6, generator=generator), torch.randn(7, 3, generator=generator)]
    ours = [torch.nn.Parameter(t.clone()) for t in tables]
    theirs = [torch.nn.Parameter(t.clone()) for t in tables]
    fast, slow = Adam(ours, lr=0.05), torch.optim.Adam(theirs, lr=0.05)
    steps = [[3, 7, 3, 39, 0, 3], [], [7, 8, 9, 10], list(range(40)) + [5, 5], [1]]
    for rows in steps:
        for a, b in zip(ours, theirs):
            ids = [r % a.shape[0] for r in rows]
            grad = _row_sparse(ids, torch.randn(len(ids), a.shape[1], generator=generator), a.shape)
            a.grad, b.grad = grad.clone(), grad.to_dense()
        assert bool(fast._native_ok()) == native_on
        fast.step()
        slow.step()
    for a, b, start in zip(ours, theirs, tables):
        torch.testing.assert_close(a.data, b.data, rtol=1e-5, atol=1e-6)
        assert not torch.equal(a.data[-1], start[-1])  # a row no step looked up moved all the same
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(fast.state[a][key], slow.state[b][key], rtol=1e-4, atol=1e-7)
        assert float(fast.state[a]["step"]) == float(slow.state[b]["step"]) == len(steps)


@needs_compiler
def test_adam_step_rows_equals_adam_step_on_the_dense_gradient_and_refuses_bad_ids():
    kernels = native.module()
    generator = torch.Generator().manual_seed(2)
    table = torch.randn(30, 5, generator=generator)
    rows, values = torch.tensor([4, 0, 29, 4, 11]), torch.randn(5, 5, generator=generator)
    dense = torch.zeros(30, 5).index_add_(0, rows, values)
    states = {}
    for name in ("rows", "dense"):
        p, m, v = table.clone(), torch.rand(30, 5, generator=generator), torch.rand(30, 5, generator=generator)
        states[name] = (p, m, v)
    states["dense"] = tuple(t.copy_(s) for t, s in zip(states["dense"], states["rows"]))
    for step in (1, 2):
        kernels.adam_step_rows(states["rows"][0], rows, values, *states["rows"][1:], 0.01, 0.9, 0.999, 1e-8, step)
        kernels.adam_step(states["dense"][0], dense, *states["dense"][1:], 0.01, 0.9, 0.999, 1e-8, step)
    for a, b in zip(states["rows"], states["dense"]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(RuntimeError, match="out of range"):
        kernels.adam_step_rows(table, torch.tensor([1, 30]), torch.ones(2, 5), torch.zeros(30, 5), torch.zeros(30, 5),
                               0.1, 0.9, 0.999, 1e-8, 1)


def test_dense_adam_gets_sparse_table_gradients_on_the_cpu_only():
    from kbit_dgl.config import Config, resolve_device, sparse_table_gradients

    config = Config()
    assert config.train.optimizer == "adam"
    assert sparse_table_gradients(config.train) == (resolve_device(config.train.device).type == "cpu")
    config.train.device = "cpu"
    assert sparse_table_gradients(config.train)
    for name in ("sparse_adam", "sparse_adagrad", "rowwise_adagrad"):
        config.train.optimizer = name
        assert sparse_table_gradients(config.train)


def test_adam_takes_torchs_step_where_the_kernel_does_not_apply():
    from kbit_dgl.train.optim import Adam

    param = torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64))
    optimizer = Adam([param], lr=0.1, weight_decay=0.01)
    param.grad = torch.ones(4, 3, dtype=torch.float64)
    assert not optimizer._native_ok()
    optimizer.step()
    assert torch.all(param.data < 1)


# ------------------------------------------------------------------- distances from packed k-bit codes

def _packed(name, spec, entities, dim, normal=False):
    """The packed-code row source of a quantized random model (even where evaluation would decode it whole)."""
    from kbit_dgl.models.model import build_model
    from kbit_dgl.quant import quantize_model
    from kbit_dgl.quant.embedding import PackedRows

    model = build_model(name, entities, 3, dim, 6.0)
    if normal:
        with torch.no_grad():
            model.entity.weight.normal_()
    quantized = quantize_model(model, spec)
    return PackedRows(quantized.entity, quantized.decoder.prepare_entities, name)


PACKED_SPECS = [(4, "int", 8), (2, "int", 16), (8, "int", 8), (1, "int_asym", 4), (4, "int_asym", 8),
                (4, "quantile", 8), (2, "quantile", 0), (8, "int_asym", 6), (2, "float", 16)]


@pytest.mark.parametrize("bits,dtype,block", PACKED_SPECS)
@pytest.mark.parametrize("name", ["l1", "l2", "dot"])
def test_packed_ids_equal_the_decoded_rows_distances(bits, dtype, block, name):
    """Byte-aligned codes with symmetric, asymmetric (offsets) and quantile codebooks, blocks that do
    and do not divide the width (20 numbers, blocks of 6 / 8), and per-row scales (block 0)."""
    from kbit_dgl.models.kernels import _ROWS
    from kbit_dgl.quant import QuantSpec

    torch.manual_seed(bits + block)
    source = _packed("transe", QuantSpec(bits, dtype, block), 50, 20, normal=True)
    assert source.native_layout() is not None
    query, ids = torch.randn(7, 20), torch.randint(50, (7, 33))
    got = native.packed_ids(name, (query,), ids, source)
    expected = _ROWS[name](query, source[ids])
    assert got is not None and got.shape == (7, 33)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_packed_ids_step_aside_where_they_do_not_apply():
    from kbit_dgl.quant import QuantSpec

    def source(name, spec):
        return _packed(name, spec, 30, 16)
    ids, query = torch.randint(30, (4, 5)), torch.randn(4, 16)
    assert source("transe", QuantSpec(3, "int", 8)).native_layout() is None  # codes straddle bytes
    assert source("transe", QuantSpec(16)).native_layout() is None  # stored as float16 numbers, not codes
    assert source("pairre", QuantSpec(4, "int", 8)).native_layout() is None  # rows are normalised first
    packed = source("transe", QuantSpec(4, "int", 8))
    assert native.packed_ids("complex_l1", (query, query), ids, packed) is None
    assert native.packed_ids("l1", (query.requires_grad_(),), ids, packed) is None
    assert native.packed_ids("l1", (query.detach().double(),), ids, packed) is None


def test_packed_ids_decode_a_code_beyond_the_codebook_to_nan():
    from kbit_dgl.quant import QuantSpec

    packed = _packed("transe", QuantSpec(4, "int", 8), 30, 16)
    assert len(packed.tensors[1]) == 15  # symmetric 4-bit: codes 0..14
    packed.tensors[0][2, 0] = 0xFF  # codes 15 and 15
    distances = native.packed_ids("l1", (torch.randn(2, 16),), torch.tensor([[2, 3], [1, 2]]), packed)
    assert torch.isnan(distances[0, 0]) and torch.isnan(distances[1, 1]) and torch.isfinite(distances[0, 1])
