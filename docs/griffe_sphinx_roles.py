"""A Griffe extension for the API page: Sphinx roles in docstrings become inline code.

Docstrings say ``:meth:`close```, ``:class:`~pupsourcing_async.Database``` and the like,
which editors and Sphinx understand but Markdown would print as they are. This turns each
into inline code before mkdocstrings renders it: ``close()``, ``Database``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["SphinxRoles", "plain"]

_ROLE = re.compile(r":(?:py:)?(meth|func|class|exc|attr|mod|data|obj|const):`([^`]+)`")


def _shown(kind: str, target: str) -> str:
    # "Title <target>" shows its title; "~a.b.c" shows its last part; ".mod" drops the dot.
    if target.endswith(">") and "<" in target:
        return target[: target.index("<")].strip()
    target = target.lstrip(".")
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"{target}()" if kind in ("meth", "func") and not target.endswith(")") else target


def plain(text: str) -> str:
    """``text`` with every Sphinx role written as Markdown inline code."""
    return _ROLE.sub(lambda match: f"`{_shown(match[1], match[2])}`", text)


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring Griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring once the object tree is complete."""
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
