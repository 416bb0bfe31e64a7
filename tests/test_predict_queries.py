"""``kbit-dgl predict RUN --queries FILE`` on files that are not UTF-8 query lines: one short error line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import train_cli_run

from kbit_dgl.cli import main
from kbit_dgl.errors import KGFormatError
from kbit_dgl.predict import read_queries

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)

SMALL = ["model.dim=8", "train.batch_size=128", "train.num_negatives=4", "train.max_epochs=1", "train.valid_every=1"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = 10 * 1024 * 1024  # a 10 MB line


@pytest.fixture(scope="module")
def run(tsv_folder, tmp_path_factory):
    return train_cli_run(tsv_folder, tmp_path_factory.mktemp("queries") / "run", SMALL)


def _predict(run, queries, capsys):
    """Exit code and stderr of ``predict RUN --queries FILE``; stdout must stay empty."""
    capsys.readouterr()
    code = main(["predict", run, "--queries", str(queries)])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def _one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err[:2000]
    assert "Traceback" not in err
    return err


def test_a_binary_file_is_one_error_line(run, tmp_path, capsys):
    queries = tmp_path / "queries.bin"
    queries.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    code, err = _predict(run, queries, capsys)
    assert code == 2
    err = _one_line(err)
    assert f"{queries}, line 1: expected UTF-8 text" in err and "byte offset 0 of the line" in err
    assert len(err) < 1000


def test_invalid_utf8_on_line_3_names_the_line_and_the_byte_offset(run, tmp_path, capsys):
    queries = tmp_path / "queries.tsv"
    queries.write_bytes(b"person_0\tlives_in\t?\n?\tmarried_to\tperson_1\nperson_\xff0\tlives_in\t?\n")
    with pytest.raises(KGFormatError, match=r"line 3: expected UTF-8 text, got the byte\(s\) b'\\xff' at byte "
                                            r"offset 7 of the line \(49 of the file"):
        read_queries(str(queries))
    code, err = _predict(run, queries, capsys)
    assert code == 2 and "line 3" in _one_line(err) and "byte offset 7" in err


def test_a_10_mb_line_is_quoted_as_a_prefix_and_its_length(run, tmp_path, capsys):
    queries = tmp_path / "queries.tsv"
    queries.write_text("person_0\tlives_in\t?\n" + "x" * BIG + "\n")  # not a query: no tabs
    code, err = _predict(run, queries, capsys)
    assert code == 2 and "line 2" in _one_line(err)
    assert len(err) < 1000 and f"({BIG} characters)" in err


def test_a_10_mb_unknown_name_is_quoted_as_a_prefix_and_its_length(run, tmp_path, capsys):
    queries = tmp_path / "queries.tsv"
    queries.write_text("person_0\tlives_in\t?\n" + "p" * BIG + "\tlives_in\t?\n")  # a query of an unknown head
    code, err = _predict(run, queries, capsys)
    assert code == 2 and "line 2" in _one_line(err) and "no entity named" in err
    assert len(err) < 1000 and f"({BIG} characters)" in err


def test_a_utf8_byte_order_mark_is_dropped(tmp_path):
    queries = tmp_path / "queries.tsv"
    queries.write_bytes(b"\xef\xbb\xbfperson_0\tlives_in\t?\n")
    assert read_queries(str(queries))[0] == [("person_0", "lives_in", None)]


def test_the_command_prints_one_line_and_no_traceback(run, tmp_path):
    queries = tmp_path / "queries.bin"
    queries.write_bytes(os.urandom(4096).replace(b"\n", b"\xfe"))
    result = subprocess.run([sys.executable, "-c", "import sys; from kbit_dgl.cli import main; "
                             "sys.exit(main(sys.argv[1:]))", "predict", run, "--queries", str(queries)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("kbit-dgl predict: error: ") and "line 1: expected UTF-8 text" in result.stderr
    _one_line(result.stderr)
    assert len(result.stderr) < 1000
