"""A Griffe extension for the docs site (mkdocs.yml loads it): fpipe's docstrings are prose
with doctest examples and reST roles; this turns them into Markdown as mkdocstrings renders
them. A doctest block (``>>>`` lines and their output, up to a blank line) becomes a fenced
``pycon`` code block, and a role such as ``:meth:`Pipeline.run``` becomes inline code.
The docstrings in the code are not changed; only what the site shows is.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|meth|class|attr|mod|exc|data|obj):`~?([^`]+)`")
FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_of(text: str) -> str:
    """Fence the doctest blocks of a docstring and turn its reST roles into inline code."""
    out: list[str] = []
    in_fence = False
    in_doctest = False
    indent = ""
    for line in text.splitlines():
        if in_doctest and not line.strip():
            out.append(f"{indent}```")
            in_doctest = False
        if not in_doctest and FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and not in_doctest and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            in_doctest = True
        out.append(line if in_doctest or in_fence else ROLE.sub(r"`\1`", line))
    if in_doctest:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`markdown_of`."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
