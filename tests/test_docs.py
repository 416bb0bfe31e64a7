"""The documentation: README.md's links, the MkDocs site built in strict mode, and the reference pages
against the code they describe (every config key, every CLI command and flag)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
HAVE_MKDOCS = importlib.util.find_spec("mkdocs") is not None
needs_mkdocs = pytest.mark.skipif(not HAVE_MKDOCS, reason='mkdocs is not installed (pip install -e ".[docs]")')

# [text](target) outside code; a target may carry an anchor or a title
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """``text`` with fenced code blocks and inline code spans blanked (brackets there are no links);
    line breaks are kept, so offsets give the same line numbers."""
    text = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(path: str):
    """(line number, target) of every relative link in a Markdown file, anchors stripped."""
    with open(path, encoding="utf-8") as handle:
        prose = _prose(handle.read())
    for match in LINK.finditer(prose):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # https:, mailto:, or an anchor in the same file
        yield prose.count("\n", 0, match.start()) + 1, target.split("#", 1)[0]


def broken_links(path: str):
    base = os.path.dirname(path)
    return [f"{os.path.relpath(path, ROOT)}:{line}: {target}" for line, target in relative_links(path)
            if not os.path.exists(os.path.normpath(os.path.join(base, target)))]


def test_readme_links_point_to_files():
    readme = os.path.join(ROOT, "README.md")
    assert list(relative_links(readme)), "README.md links to no docs page"
    assert broken_links(readme) == []


def test_readme_keeps_the_quick_start_commands():
    # .ci/run and the before-stop hook look for the test command in the README
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert "## Quick start" in readme
    assert 'pip install -c constraints.txt -e ".[test]" && python -m pytest -q' in readme
    assert "pip install -c constraints.txt -e . && kbit-dgl demo" in readme


def test_docs_links_point_to_files():
    """The same check as MkDocs' on every page, for machines without mkdocs."""
    pages = [os.path.join(folder, name) for folder, _, names in os.walk(DOCS) for name in names
             if name.endswith(".md")]
    assert len(pages) > 10
    assert [problem for page in pages for problem in broken_links(page)] == []


def _mkdocs_build(root: str, site_dir: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", site_dir],
                          cwd=root, capture_output=True, text=True, timeout=300)


@needs_mkdocs
def test_strict_build_passes(tmp_path):
    result = _mkdocs_build(ROOT, str(tmp_path / "site"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "site" / "design" / "architecture" / "index.html").exists()


@needs_mkdocs
@pytest.mark.parametrize("link", ["[gone](no-such-page.md)", "[gone](train.md#no-such-anchor)"])
def test_strict_build_fails_on_a_broken_link(tmp_path, link):
    copy = tmp_path / "copy"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(os.path.join(ROOT, "mkdocs.yml"), copy / "mkdocs.yml")
    with open(copy / "docs" / "howto" / "install.md", "a", encoding="utf-8") as handle:
        handle.write(f"\nSee {link}.\n")
    result = _mkdocs_build(str(copy), str(tmp_path / "site"))
    assert result.returncode != 0
    assert "howto/install.md" in result.stderr and link.split("(")[1].rstrip(")") in result.stderr


def _config_table_keys(text: str):
    """``section.key`` of every key named in the first cell of the configuration tables; a cell's
    bare names (`valid_every`) belong to the section of the dotted name before them."""
    keys = set()
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        section = None
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if "." in name:
                section, _, name = name.partition(".")
            if section:
                keys.add(f"{section}.{name}")
    return keys


def test_every_config_key_is_documented():
    from kbit_dgl.config import Config

    with open(os.path.join(DOCS, "reference", "config.md"), encoding="utf-8") as handle:
        documented = _config_table_keys(handle.read())
    config = Config()
    keys = {f"{section.name}.{field.name}" for section in dataclasses.fields(config)
            for field in dataclasses.fields(getattr(config, section.name))}
    assert sorted(keys - documented) == []
    assert sorted(documented - keys) == []


def test_every_cli_command_and_flag_is_documented():
    from kbit_dgl.cli import build_parser

    with open(os.path.join(DOCS, "reference", "cli.md"), encoding="utf-8") as handle:
        text = handle.read()
    sections = re.split(r"^## `kbit-dgl (\S+)`$", text, flags=re.M)
    documented = dict(zip(sections[1::2], sections[2::2]))
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(documented) == sorted(commands)
    missing = [f"{name} {option}" for name, command in commands.items() for action in command._actions
               for option in action.option_strings
               if option not in ("-h", "--help") and f"`{option}" not in documented[name]]
    assert missing == []


def test_pointers_into_the_docs_exist():
    """A docstring or comment that sends the reader to a page (``docs/...md``, or the old design card
    ARCHITECTURE.md, which the repository never held) names a file that is there."""
    missing = []
    for top in ("kbit_dgl", "pipelines", "examples"):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as handle:
                    for number, line in enumerate(handle, 1):
                        for target in re.findall(r"(?<![\w/.-])((?:docs/[\w/.-]+|ARCHITECTURE)\.md)", line):
                            if not os.path.exists(os.path.join(ROOT, target)):
                                missing.append(f"{os.path.relpath(path, ROOT)}:{number}: {target}")
    assert missing == []
