"""Packaging: every subpackage of the engine ships (pyproject lists packages explicitly
because ``models/`` and ``guides/`` are mapped into ``ppl_gen``)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent


def test_every_engine_subpackage_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "ppl_gen." + ".".join(p.parent.relative_to(ROOT / "ppl_gen").parts)
        for p in (ROOT / "ppl_gen").rglob("__init__.py")
        if p.parent != ROOT / "ppl_gen"
    }
    assert found <= listed, f"missing from pyproject [tool.setuptools] packages: {found - listed}"
    assert {"ppl_gen", "ppl_gen.models", "ppl_gen.guides"} <= listed
