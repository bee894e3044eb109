"""Every ``python`` block of the docs and the README runs, page by page, top to bottom."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
NEEDS_TF = ("keras", "tensorflow", "fpipe.tf")


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def test_every_page_is_linked_from_the_index():
    index = (ROOT / "docs" / "index.md").read_text()
    for page in PAGES:
        if page.parent.name == "docs" and page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"


def test_every_module_is_in_the_index_table_of_where_the_code_lives():
    index = (ROOT / "docs" / "index.md").read_text()
    table = index[index.index("## Where the code lives") :]
    modules = [p.stem for p in (ROOT / "fpipe").glob("*.py") if p.stem != "__init__"]
    packages = [p.parent.name for p in (ROOT / "fpipe").glob("*/__init__.py")]
    missing = [m for m in [*modules, *packages] if f"`fpipe.{m}`" not in table]
    assert not missing, f"docs/index.md's table of modules lacks {missing}"


def test_the_readme_has_exactly_two_commands():
    commands = re.findall(r"^```bash\n(.*?)^```$", (ROOT / "README.md").read_text(), re.S | re.M)
    assert [c.strip() for c in commands] == ["bash scripts/example.sh", "bash scripts/test.sh"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_shown_only_blocks_compile(page: Path):
    for k, block in enumerate(re.findall(r"^```py\n(.*?)^```$", page.read_text(), re.S | re.M)):
        compile(block, f"{page.name} py block {k}", "exec")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_code_runs(page: Path, tmp_path: Path):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    source = "\n\n".join(blocks)
    if any(name in source for name in NEEDS_TF):
        pytest.importorskip("tensorflow")
    # a fresh interpreter per page: the page's Batch classes and models stay out of other tests
    script = tmp_path / f"{page.stem}.py"
    script.write_text(source)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "error::RuntimeWarning"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, f"{page.name}:\n{done.stdout}\n{done.stderr}"
