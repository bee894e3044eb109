"""The API reference is complete and the docs site builds.

Every public name (``fpipe.__all__`` and the ``__all__`` of the public submodules
``fpipe.testing`` and ``fpipe.tf``) and every public method or property of a public class
has a docstring of its own and is rendered by a ``::: ...`` directive of a page in
docs/reference/; every page of docs/ is in mkdocs.yml's nav; and ``mkdocs build --strict``
succeeds, offline, and renders every one of those names.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
PUBLIC_MODULES = ("fpipe", "fpipe.testing", "fpipe.tf")
# `::: target` and the indented YAML options under it
DIRECTIVE = re.compile(r"^::: *([\w.]+) *\n((?:[ \t]+\S.*\n?)*)", re.M)


# -- what is public ---------------------------------------------------------------------------
def public_names() -> dict[str, Any]:
    """'fpipe.Pipeline', 'fpipe.testing.assert_resumable', ... -> the object."""
    out = {}
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            out[f"{modname}.{name}"] = getattr(module, name)
    return out


def public_members(cls: type) -> dict[str, Any]:
    """The public methods and properties of ``cls``, its fpipe base classes' included
    (as the reference renders them), as found on ``cls``."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if not klass.__module__.startswith("fpipe"):
            continue  # object, Exception...: not ours to document
        for name, value in vars(klass).items():
            if name.startswith("_") or name in out:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property) or inspect.isfunction(value):
                out[name] = value
    return out


def own_doc(obj: Any) -> str | None:
    """The object's own docstring (a property's getter's; never one inherited)."""
    if isinstance(obj, property):
        obj = obj.fget
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else None


def class_doc(cls: type) -> str | None:
    """The class's own docstring (not the signature a dataclass makes up without one)."""
    doc = cls.__dict__.get("__doc__")
    if not doc or (hasattr(cls, "__dataclass_fields__") and doc.startswith(f"{cls.__name__}(")):
        return None
    return doc


def alias_doc(cls: type, name: str) -> str | None:
    """The docstring under ``name = other`` in the class body that defines ``name``: the
    reference renders such an alias as an attribute, documented by that string only."""
    klass = next(k for k in cls.__mro__ if name in vars(k))
    body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
    assert isinstance(body, ast.ClassDef)
    for node, after in zip(body.body, [*body.body[1:], None], strict=True):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                return str(after.value.value)
            return None
    return None


def member_doc(cls: type, name: str, value: Any) -> str | None:
    """A method's or property's own docstring; an alias's (``b = a``) attribute docstring."""
    function = value.fget if isinstance(value, property) else value
    if inspect.isfunction(function) and function.__name__ != name:
        return alias_doc(cls, name)
    return own_doc(value)


def paths_of(name: str, obj: Any) -> set[str]:
    """The identifiers the reference may render ``obj`` under: its public name and the
    module path of its definition (a module directive renders that one)."""
    paths = {name}
    if hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
        paths.add(f"{obj.__module__}.{obj.__qualname__}")
    return paths


def everything_public() -> Iterator[tuple[str, set[str], str | None]]:
    """(public name, the identifiers it may be rendered under, its own docstring) for every
    public name and every public method or property of a public class."""
    for name, obj in public_names().items():
        paths = paths_of(name, obj)
        yield name, paths, class_doc(obj) if inspect.isclass(obj) else own_doc(obj)
        if inspect.isclass(obj):
            for member, value in public_members(obj).items():
                yield (
                    f"{name}.{member}",
                    {f"{p}.{member}" for p in paths},
                    member_doc(obj, member, value),
                )


# -- what the reference renders ---------------------------------------------------------------
def directives() -> list[tuple[str, str, str]]:
    """(page, target, options) for every ``:::`` directive of docs/reference/."""
    return [
        (page.name, target, options)
        for page in sorted(REFERENCE.glob("*.md"))
        for target, options in DIRECTIVE.findall(page.read_text())
    ]


def members_option(options: str) -> list[str] | None:
    """The directive's ``members`` option: None (all public members), or the names listed
    (``members: false`` lists none)."""
    found = re.search(r"^\s*members:[ \t]*(.*)$", options, re.M)
    if found is None:
        return None
    inline = found.group(1).strip()
    if inline in ("false", "False", "[]"):
        return []
    if inline.startswith("["):
        return [x.strip() for x in inline.strip("[]").split(",") if x.strip()]
    return re.findall(r"^\s*-\s*(\w+)\s*$", options[found.end() :], re.M)


def resolve(target: str) -> Any:
    try:
        return importlib.import_module(target)
    except ImportError:
        modname, _, attr = target.rpartition(".")
        return getattr(importlib.import_module(modname), attr)


def rendered_paths() -> set[str]:
    """The identifiers the directives render, computed from their targets and options the
    way mkdocstrings does here (``filters: public`` and ``inherited_members: true`` in
    mkdocs.yml): a module renders the names of its ``__all__`` (or those its
    ``members`` option lists) that it defines or imports (not those a module
    ``__getattr__`` makes on demand), a class its public members."""
    out: set[str] = set()

    def add(path: str, obj: Any, members: list[str] | None) -> None:
        out.add(path)
        if inspect.isclass(obj):
            for member in public_members(obj):
                if members is None or member in members:
                    out.add(f"{path}.{member}")

    for _, target, options in directives():
        obj, members = resolve(target), members_option(options)
        if isinstance(obj, ModuleType):
            out.add(target)
            names = getattr(obj, "__all__", None) or [n for n in vars(obj) if n[0] != "_"]
            for name in names if members is None else members:
                if name in vars(obj):  # a name a module makes on demand is not seen
                    add(f"{target}.{name}", vars(obj)[name], None)
        else:
            add(target, obj, members)
    return out


def test_the_public_api_is_what_this_test_walks():
    found = public_names()
    assert "fpipe.Pipeline" in found and "fpipe.testing.assert_resumable" in found
    assert "fpipe.tf.to_tf_dataset" in found
    members = public_members(found["fpipe.Pipeline"])
    # inherited from fpipe's own bases (algebra, declarations), not from object
    assert {"run", "steps", "init_variable", "has_variable"} <= set(members)
    assert "__init__" not in members and "mro" not in members


def test_every_public_name_has_a_docstring():
    missing = [name for name, _, doc in everything_public() if not (doc and doc.strip())]
    assert not missing, (
        f"{len(missing)} public names lack a docstring of their own (the reference shows "
        f"only documented ones): {missing}"
    )


def test_every_directive_names_something_that_exists():
    for page, target, _ in directives():
        try:
            resolve(target)
        except (ImportError, AttributeError) as error:
            pytest.fail(f"docs/reference/{page}: `::: {target}` names nothing: {error}")


def test_every_public_name_is_in_the_reference():
    rendered = rendered_paths()
    missing = [name for name, paths, _ in everything_public() if not paths & rendered]
    assert not missing, (
        f"missing from docs/reference/ (add a `::: module` or `::: fpipe.Name` directive, "
        f"or the name to a directive's `members` list): {missing}"
    )


def test_the_reference_check_sees_a_missing_name(monkeypatch: pytest.MonkeyPatch):
    every = directives()
    assert ("testing.md", "fpipe.testing", "") in every
    rendered = rendered_paths()
    assert {"fpipe.testing", "fpipe.testing.assert_resumable", "fpipe.tf.to_tf_dataset"} <= rendered
    # without the testing page's directive, its names are missing
    monkeypatch.setattr(
        sys.modules[__name__], "directives", lambda: [d for d in every if d[1] != "fpipe.testing"]
    )
    assert "fpipe.testing.assert_resumable" not in rendered_paths()
    # a module directive with `members` renders those only; `members: false` none
    assert members_option("    options:\n      members: false\n") == []
    assert members_option(
        "    options:\n      members:\n        - Batch\n        - SkipBatch\n"
    ) == [
        "Batch",
        "SkipBatch",
    ]
    assert members_option("    options:\n      members: [Batch, SkipBatch]\n") == [
        "Batch",
        "SkipBatch",
    ]
    assert members_option("    options:\n      show_root_heading: true\n") is None


# -- the site ---------------------------------------------------------------------------------
def nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r"([\w./-]+\.md)\s*$", nav, re.M)


def test_every_docs_page_is_in_the_nav():
    nav = nav_pages()
    pages = [p.relative_to(DOCS).as_posix() for p in [*DOCS.glob("*.md"), *REFERENCE.glob("*.md")]]
    assert "index.md" in nav and "reference/index.md" in nav
    missing = sorted(set(pages) - set(nav))
    assert not missing, f"add these pages to mkdocs.yml's nav: {missing}"
    gone = sorted(p for p in nav if not (DOCS / p).is_file())
    assert not gone, f"mkdocs.yml's nav names pages that do not exist: {gone}"


def test_the_site_needs_nothing_from_the_network_to_build():
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^  font: false$", config, re.M), "theme.font: false (no web fonts)"
    plugins = re.findall(r"^  - (\w+)", config[config.index("\nplugins:") :], re.M)
    assert plugins[:2] == ["search", "mkdocstrings"], plugins
    for fetching in ("privacy", "social", "optimize", "git-revision", "git-committers"):
        assert fetching not in plugins


def test_ci_builds_the_site_strict_into_an_ignored_folder():
    # .ci/run runs scripts/test.sh, which runs scripts/docs.sh
    assert "exec bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/docs\.sh\b", (ROOT / "scripts" / "test.sh").read_text(), re.M)
    docs_sh = (ROOT / "scripts" / "docs.sh").read_text()
    assert re.search(r"^source .*setup\.sh", docs_sh, re.M)
    assert re.search(r"^[^#\n]*mkdocs build --strict --site-dir site\b", docs_sh, re.M)
    assert "site/" in (ROOT / ".gitignore").read_text().splitlines()


def load_griffe_extension() -> ModuleType:
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location(
        "griffe_doctests", ROOT / "scripts" / "griffe_doctests.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstrings_become_markdown_on_the_site():
    markdown_of = load_griffe_extension().markdown_of
    doc = (
        "Run it with :meth:`Pipeline.run` or :func:`~fpipe.tf.to_tf_dataset`.\n"
        "\n"
        ">>> [1, 2][0]\n"
        "1\n"
        "\n"
        "```python\n"
        ">>> kept as written\n"
        "```\n"
        "    >>> indented\n"
        "    2"
    )
    assert markdown_of(doc).split("\n") == [
        "Run it with `Pipeline.run` or `fpipe.tf.to_tf_dataset`.",
        "",
        "```pycon",
        ">>> [1, 2][0]",
        "1",
        "```",
        "",
        "```python",
        ">>> kept as written",
        "```",
        "    ```pycon",
        "    >>> indented",
        "    2",
        "    ```",
    ]


def read_inventory(path: Path) -> set[str]:
    """The object names of a Sphinx inventory (objects.inv) that mkdocstrings writes."""
    header, _, body = path.read_bytes().partition(b"zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2"), header
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def test_the_site_builds_strict_offline_and_renders_every_public_name(tmp_path: Path):
    for needed in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed (the docs extra: pip install -e '.[docs]')")
    site = tmp_path / "site"
    closed = "http://127.0.0.1:9"  # nothing listens there: a fetch during the build fails
    env = {
        **os.environ,
        "NO_MKDOCS_2_WARNING": "1",
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "http_proxy": closed,
        "https_proxy": closed,
        "NO_PROXY": "",
        "no_proxy": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    rendered = read_inventory(site / "objects.inv")
    missing = [name for name, paths, _ in everything_public() if not paths & rendered]
    assert not missing, f"the built reference does not render: {missing}"
    for page in REFERENCE.glob("*.md"):
        html = site / "reference" / ("" if page.stem == "index" else page.stem) / "index.html"
        text = html.read_text()
        for role in (":meth:`", ":func:`", ":class:`", ":mod:`"):
            assert role not in text, f"reference/{page.name}: a reST role is left raw: {role}"


# -- installing -------------------------------------------------------------------------------
def test_the_readme_installs_the_distribution_and_extras_pyproject_defines():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "fpipe-ml"
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r'^pip install "fpipe-ml(?:\[([\w,]+)\])?"', readme, re.M)
    assert commands, 'README shows no `pip install "fpipe-ml..."` command'
    named = {extra for extras in commands for extra in extras.split(",") if extra}
    assert {"tf", "dask", "plot"} <= named
    assert named <= set(project["optional-dependencies"]), named
    assert 'pip install -e ".[dev]"' in readme and "`pip install -e .`" in readme


def test_every_install_hint_names_the_distribution():
    # `fpipe` on PyPI is another project: a hint must say fpipe-ml
    files = [ROOT / "README.md", *DOCS.rglob("*.md"), *(ROOT / "fpipe").rglob("*.py")]
    wrong = [
        f"{path.relative_to(ROOT)}: {hint}"
        for path in files
        for hint in re.findall(r"pip install \S*\bfpipe\b(?!-ml)\S*", path.read_text())
        if "-e" not in hint
    ]
    assert not wrong, f"say fpipe-ml, the distribution's name: {wrong}"


def test_importing_fpipe_imports_no_extra():
    heavy = ("tensorflow", "keras", "dask", "distributed", "matplotlib", "tqdm", "pandas")
    code = f"import sys, fpipe; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


FAKE_PIP = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls"
if [ "$*" = '-m pip install --progress-bar off -e .[dev]' ]; then
  echo 'Obtaining file:///somewhere/fpipe'
  echo 'Collecting numpy>=1.24 (from fpipe-ml==0.1.0)'
  echo '  Downloading numpy-2.3.0-cp311-manylinux.whl.metadata (62 kB)'
  echo '  Downloading tensorflow_cpu-2.21.0-cp311-manylinux_2_27_x86_64.whl (260.1 MB)'
  echo 'Requirement already satisfied: six in ./.venv/lib/python3.11/site-packages'
  echo 'Installing collected packages: numpy, tensorflow-cpu'
  echo 'Successfully installed numpy-2.3.0 tensorflow-cpu-2.21.0'
fi
"""


def test_setup_shows_progress_on_the_first_install_and_nothing_after(tmp_path: Path):
    # scripts/setup.sh in a copy of the project whose .venv/bin/python is a stand-in for
    # pip: what the script prints, not what pip installs, is under test
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text((ROOT / "scripts" / "setup.sh").read_text())
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PIP)
    python.chmod(0o755)

    def setup() -> str:
        done = subprocess.run(
            ["bash", "-c", "source scripts/setup.sh"],
            cwd=tmp_path,
            capture_output=True,  # a log, not a terminal
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    first = setup()
    assert "installing fpipe (the distribution fpipe-ml)" in first
    assert "first install downloads several hundred MB" in first
    shown = [line.strip() for line in first.splitlines() if line.startswith("   ")]
    assert "Collecting numpy>=1.24 (from fpipe-ml==0.1.0)" in shown
    assert any("tensorflow_cpu-2.21.0" in line and "260.1 MB" in line for line in shown)
    assert "Successfully installed numpy-2.3.0 tensorflow-cpu-2.21.0" in shown
    assert not any("metadata" in line or "already satisfied" in line for line in shown)
    calls = (tmp_path / ".venv" / "calls").read_text().splitlines()
    assert "-m pip install --progress-bar off -e .[dev]" in calls  # no -qq: pip speaks

    assert setup() == ""  # later runs: quiet, and pip is not called again
    assert (tmp_path / ".venv" / "calls").read_text().splitlines() == calls
