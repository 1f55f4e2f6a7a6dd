"""Shared fixtures: small CSV sources and recipes written into a temp folder."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml


class Workspace:
    """A temp folder with helpers to write sources and recipes into it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8", newline="")
        return path

    def recipe(
        self,
        match_sql: str,
        *,
        left: str = "left.csv",
        right: str = "right.csv",
        left_key: list[str] | None = None,
        right_key: list[str] | None = None,
        left_alias: str = "l_src",
        right_alias: str = "r_src",
        name: str = "recipe.yaml",
        left_opts: dict[str, Any] | None = None,
        right_opts: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Path:
        data = {
            "recipe_id": "test",
            "name": "test recipe",
            "match_sql": match_sql,
            "sources": {
                "left": {
                    "alias": left_alias,
                    "type": "file",
                    "uri": left,
                    "primary_key": left_key or ["id"],
                },
                "right": {
                    "alias": right_alias,
                    "type": "file",
                    "uri": right,
                    "primary_key": right_key or ["id"],
                },
            },
        }
        data["sources"]["left"].update(left_opts or {})
        data["sources"]["right"].update(right_opts or {})
        data.update(extra)
        path = self.root / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)
