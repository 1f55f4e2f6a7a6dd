"""Doctests: ``make test`` runs the examples in ``src/kalla``'s docstrings.

Only modules whose docstrings hold examples (``>>>``) are collected, so collecting doctests
never imports a module for nothing: optional dependencies (ray, google-cloud, …) and the
``__main__`` entry points stay unimported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SRC = Path(__file__).parent / "src" / "kalla"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not collection_path.is_relative_to(SRC) or collection_path.suffix != ".py":
        return None
    if collection_path.name == "__main__.py":
        return True
    return ">>> " not in collection_path.read_text(encoding="utf-8")
