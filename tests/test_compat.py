"""kbit_dgl.compat: every reach into another library's private internals is there, each checked against the
versions it was verified on, and fails loudly (or warns once and takes its public fallback) on others."""
from __future__ import annotations

import ast
import importlib.util
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from kbit_dgl import compat

PACKAGE = Path(compat.__file__).parent
LIBRARIES = ("torch", "dgl", "numpy", "pickle", "ogb", "optuna")
# Private fields read on objects of those libraries (a tensor, a DGL embedding or optimizer, an unpickler),
# on any receiver but ``self`` (kbit_dgl's subclasses of DGL's optimizers: compat.check_dgl_sparse_optimizer_subclass)
PRIVATE_FIELDS = {"_version", "_indices", "_values", "_nnz", "_tensor", "_params", "_state", "_lr", "_STORE",
                  "_unframer", "_get_default_store", "_get_build_directory", "_reconstruct", "_Unpickler"}
# dgl.nn.RelGraphConv's / TypedLinear's undocumented fields, on any receiver
DGL_LAYER_FIELDS = {"linear_r", "loop_weight", "h_bias", "layer_norm_weight"}
NAMES = {"FileBaton"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _mentions(node: ast.AST, names: set) -> bool:
    return any(isinstance(sub, ast.Name) and sub.id in names for sub in ast.walk(node))


def _library_module_call(node: ast.AST) -> bool:
    """``importlib.import_module("dgl...")`` (or an attribute of it)."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
        and str(node.args[0].value).split(".")[0] in LIBRARIES


def _bind_indirect(tree: ast.AST, bound: set) -> None:
    """Names that stand for library modules or classes indirectly: ``x = importlib.import_module("dgl.x")``,
    a loop variable over a literal of library modules (``for module in (kvstore, dist_graph)``), or over a
    name assigned such a literal (``patched = ((dataset_module, refuse),)``, then ``for module, _ in patched``)."""
    containers: set = set()
    for _ in range(3):  # a few rounds: bindings may chain
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if _library_module_call(node.value):
                    bound.add(node.targets[0].id)
                elif isinstance(node.value, (ast.Tuple, ast.List)) and _mentions(node.value, bound):
                    containers.add(node.targets[0].id)
            elif isinstance(node, (ast.For, ast.comprehension)):
                source = node.iter
                if (isinstance(source, (ast.Tuple, ast.List)) and _mentions(source, bound)) or \
                        (isinstance(source, ast.Name) and source.id in containers):
                    bound.update(sub.id for sub in ast.walk(node.target) if isinstance(sub, ast.Name))


def private_uses(path: Path) -> list:
    """(line, what) for each use of a library's private internals in a source file (strings and comments
    do not count: they describe the pickle format and the workarounds)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    bound = set()  # local names bound to library modules or objects
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    bound.add(alias.asname or alias.name.split(".")[0])
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in LIBRARIES:
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if any(_private(part) for part in node.module.split(".")) or _private(alias.name) \
                        or alias.name in NAMES:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
    _bind_indirect(tree, bound)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, root = [node.attr], node.value
            while isinstance(root, ast.Attribute):
                chain.append(root.attr)
                root = root.value
            root_name = root.id if isinstance(root, ast.Name) else None
            if root_name in bound and any(_private(part) or part in NAMES for part in chain):
                found.append((node.lineno, f"{root_name}.{'.'.join(reversed(chain))}"))
            elif node.attr in PRIVATE_FIELDS and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                found.append((node.lineno, f"._{node.attr.lstrip('_')}"))
            elif node.attr in DGL_LAYER_FIELDS or node.attr in NAMES:
                found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, (ast.Assign, ast.AugAssign)):  # monkeypatching a library's module or class
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id in bound:
                    found.append((node.lineno, f"{target.value.id}.{target.attr} = ..."))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" \
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in bound:
            found.append((node.lineno, f"setattr({node.args[0].id}, ...)"))
    return sorted(set(found))


@pytest.mark.shallow
def test_no_private_internals_outside_compat():
    uses = [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
            for path in sorted(PACKAGE.rglob("*.py")) if path != Path(compat.__file__)
            for line, what in private_uses(path)]
    assert not uses, ("private internals of another library used outside kbit_dgl/compat.py; move each into a "
                      "checked function there:\n" + "\n".join(uses))


@pytest.mark.shallow
def test_the_checker_finds_the_kinds_of_use_it_guards(tmp_path):
    source = tmp_path / "uses.py"
    source.write_text(
        "import torch\nimport torch._dynamo\nimport pickle\n"
        "from torch.utils.cpp_extension import _get_build_directory\n"
        "from dgl.heterograph import DGLGraph\nfrom dgl.distributed import rpc_client\n"
        "class U(pickle._Unpickler): pass\n"
        "x = torch._inductor\nkey = p._version\nrows = g._indices()\nw = layer.linear_r.W\n"
        "rpc_client.local_ip4_addr_list = None\nsetattr(rpc_client, 'x', 1)\nDGLGraph.shared_memory = None\n"
        "ok = self._state\ns = '''torch._utils._rebuild_tensor_v2'''  # numpy._core in a comment\n"
        "for module in (rpc_client,):\n    setattr(module, 'f', None)\n"
        "patched = ((rpc_client, 1),)\nfor module, value in patched:\n    module.input = value\n"
        "graph_class = importlib.import_module('dgl.heterograph').DGLGraph\ngraph_class.shared_memory = None\n"
        "for target in (config,):\n    setattr(target, 'x', 1)\n")
    lines = {line for line, _ in private_uses(source)}
    assert lines == {2, 4, 7, 8, 9, 10, 11, 12, 13, 14, 18, 21, 23}, private_uses(source)


def test_the_checker_finds_what_main_had(tmp_path):
    """The uses this module took over (as main had them before): native's build folder, kernels' dynamo
    exception, optim's sparse parts, torchfile's unpickler and numpy constructor, distributed's stores."""
    text = ("from torch.utils.cpp_extension import _get_build_directory\nimport torch._dynamo\n"
            "import pickle\nclass _U(pickle._Unpickler):\n    dispatch = dict(pickle._Unpickler.dispatch)\n"
            "from numpy._core.multiarray import _reconstruct\n"
            "import torch.distributed as dist\nfrom dgl.nn.pytorch import sparse_emb\n"
            "sparse_emb._STORE = dist.distributed_c10d._get_default_store()\n")
    probe = tmp_path / "probe.py"
    probe.write_text(text)
    assert {line for line, _ in private_uses(probe)} == {1, 2, 4, 5, 6, 9}


# --- the version table ---------------------------------------------------------------------------------

def _installed(library: str) -> bool:
    return library == "python" or importlib.util.find_spec(library) is not None


def test_every_known_version_entry_holds_for_the_installed_versions():
    """The pinned environment (constraints.txt) lies inside every range of the table."""
    for piece, known in compat.KNOWN_VERSIONS.items():
        if not all(_installed(library) for library, _, _ in known.requires):
            continue
        assert compat.unknown_versions(piece) == [], (piece, known)
        assert compat.check(piece) is True


SHALLOW_PIECES = ("cpp_extension_build_lock", "dynamo_exception", "tensor_version_counter",
                  "sparse_coo_uncoalesced", "pure_python_unpickler", "numpy_reconstruct")


@pytest.mark.shallow
def test_the_shallow_path_pieces_are_known_on_this_torch_and_numpy():
    """What the DGL-free path uses holds from the pin through the newest torch and numpy (.ci/newest)."""
    for piece in SHALLOW_PIECES:
        assert compat.unknown_versions(piece) == [], piece
        assert all(library in ("torch", "numpy", "python") for library, _, _ in compat.KNOWN_VERSIONS[piece].requires)


def test_the_version_parser_reads_local_and_pre_releases():
    assert compat._major_minor("2.2.1+cu121") == (2, 2)
    assert compat._major_minor("2.15.0.dev20261201") == (2, 15)
    assert compat._major_minor("nightly") is None


# --- unknown versions: each guarded function fails loudly or takes its documented fallback ---------------

UNKNOWN = "9.9.0"


def _set_unknown(monkeypatch, library: str) -> None:
    if library == "python":
        monkeypatch.setattr(platform, "python_version", lambda: UNKNOWN)
    else:
        module = pytest.importorskip(library)
        monkeypatch.setattr(module, "__version__", UNKNOWN)


def _relgraphconv():
    from dgl.nn import RelGraphConv
    return RelGraphConv(4, 4, 3, regularizer="basis", num_bases=2)


def _enter(context):
    with context:
        pass


# piece -> (library made unknown, the call, None: raises CompatError; else a check of the fallback's result)
CASES = {
    "cpp_extension_build_lock": ("torch", lambda: compat.cpp_extension_build_directory("kbit_dgl_test"),
                                 lambda result: result is None),
    "dynamo_exception": ("torch", compat.dynamo_exceptions, lambda result: result == (Exception,)),
    "tensor_version_counter": ("torch", lambda: [compat.tensor_version(torch.zeros(1)) for _ in range(2)],
                               lambda result: result[0] != result[1]),
    "sparse_coo_uncoalesced": (
        "torch", lambda: compat.sparse_rows(torch.sparse_coo_tensor([[1, 0, 1]], torch.ones(3, 2), (3, 2))),
        lambda result: result[0].tolist() == [0, 1] and result[1].tolist() == [[1, 1], [2, 2]]),
    "inductor_compile_threads": ("torch", lambda: compat.set_inductor_compile_threads(1), lambda result: True),
    "inductor_compile_pools": ("torch", compat.stop_inductor_compile_pools, lambda result: True),
    "dgl_embedding_store": ("dgl", compat.share_process_group_store_with_dgl, None),
    "dgl_sparse_optimizer_internals": ("dgl", lambda: compat.sparse_optimizer_params(object()), None),
    "dgl_machine_on_host": ("dgl", lambda: _enter(compat.dgl_machine_on_host("0")), None),
    "dgl_rel_graph_conv_fields": ("dgl", lambda: compat.rel_graph_conv_parts(_relgraphconv()), None),
    "pure_python_unpickler": ("python", compat.check_pure_python_unpickler, None),
    "numpy_reconstruct": ("numpy", compat.numpy_reconstruct, None),
    "ogb_input_prompt": ("ogb", lambda: _enter(compat.ogb_without_prompts()), None),
}


def test_every_table_entry_has_an_unknown_version_case():
    assert set(CASES) == set(compat.KNOWN_VERSIONS)
    for piece, (library, _, fallback) in CASES.items():
        known = compat.KNOWN_VERSIONS[piece]
        assert library in [name for name, _, _ in known.requires], piece
        assert (fallback is None) == (known.fallback is None), piece


@pytest.mark.parametrize("piece", sorted(CASES))
def test_an_unknown_version_fails_loudly_or_warns_and_falls_back(monkeypatch, piece):
    library, call, fallback = CASES[piece]
    if library == "dgl":
        pytest.importorskip("dgl")
    if library == "ogb":
        pytest.importorskip("ogb.linkproppred")
    monkeypatch.setattr(compat, "_WARNED", set())
    _set_unknown(monkeypatch, library)
    if fallback is None:
        with pytest.raises(compat.CompatError) as raised:
            call()
        message = str(raised.value)
    else:
        with pytest.warns(RuntimeWarning) as caught:
            result = call()
        assert fallback(result), result
        message = str(caught[0].message)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            call()  # warned once only
    assert piece in message and UNKNOWN in message and library.replace("python", "Python") in message
    assert "Install" in message and "KNOWN_VERSIONS" in message


def test_an_unknown_torch_leaves_inductors_compile_threads_alone(monkeypatch):
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config, "compile_threads", 7)
    monkeypatch.setattr(compat, "_WARNED", set())
    _set_unknown(monkeypatch, "torch")
    with pytest.warns(RuntimeWarning, match="inductor_compile_threads"):
        compat.set_inductor_compile_threads(1)
    assert inductor_config.compile_threads == 7


def test_reading_a_torch_file_under_an_unknown_python_fails_loudly(monkeypatch, tmp_path):
    from kbit_dgl.data import torchfile

    path = tmp_path / "split.pt"
    torch.save({"head": torch.arange(3)}, path)
    monkeypatch.setattr(platform, "python_version", lambda: UNKNOWN)
    with pytest.raises(compat.CompatError, match=r"Python 9\.9\.0"):
        torchfile.load_id_arrays(str(path), lambda array: array)


# --- the DistDGL machine patches are put back --------------------------------------------------------

def test_machine_on_host_restores_every_patch():
    """DistDGL's several-machines-on-one-host patches used to stay for the process once applied."""
    pytest.importorskip("dgl")
    from dgl import heterograph_index
    from dgl.distributed import dist_graph, graph_partition_book, kvstore, rpc_client, shared_mem_utils
    from dgl.heterograph import DGLGraph

    owners = [rpc_client, kvstore, dist_graph, graph_partition_book, shared_mem_utils, heterograph_index, DGLGraph]
    before = [dict(vars(owner)) for owner in owners]
    with compat.dgl_machine_on_host("2"):
        assert rpc_client.local_ip4_addr_list() == {"127.0.0.3"}
        assert shared_mem_utils.empty_shared_mem is not before[4]["empty_shared_mem"]
    for owner, saved in zip(owners, before):
        now = dict(vars(owner))
        changed = [name for name in set(saved) | set(now) if saved.get(name) is not now.get(name)]
        assert not changed, (owner, changed)
    with compat.dgl_machine_on_host(None):
        assert rpc_client.local_ip4_addr_list is before[0]["local_ip4_addr_list"]


@pytest.mark.shallow
def test_compat_imports_no_dgl():
    code = ("import sys; sys.modules['dgl'] = None; import kbit_dgl.compat as c; c.dynamo_exceptions(); "
            "c.tensor_version(__import__('torch').zeros(1)); c.numpy_reconstruct()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
