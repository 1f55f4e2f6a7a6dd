"""Recipes: load unchanged from the original's format, collect every problem, map to a job."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from kalla import JobRequest, Recipe, RecipeInvalid, Side, SourceNotFound

ORIGINAL = """
recipe_id: inv-pay
name: Invoices vs payments
description: monthly
match_sql: SELECT * FROM left_src l JOIN right_src r ON l.id = r.ref
match_description: same reference
sources:
  left:
    alias: left_src
    type: file
    schema: [id, amount]
    primary_key: [id]
  right:
    alias: right_src
    type: postgres
    uri: postgres://kalla:s3cret@db.internal:5432/ledger?table=payments
    primary_key: [payment_id]
"""


def test_a_recipe_written_for_the_original_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(ORIGINAL)
    recipe = Recipe.load(path)
    assert recipe.sources.left.source_type == "file"
    assert recipe.sources.left.uri is None
    assert recipe.sources.right.primary_key == ["payment_id"]


def test_relative_file_uris_resolve_against_the_recipe_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "r.json"
    data = {
        "recipe_id": "x", "name": "x", "match_sql": "SELECT * FROM a JOIN b ON a.id = b.id",
        "sources": {
            "left": {"alias": "a", "type": "file", "uri": "data/a.csv", "primary_key": ["id"]},
            "right": {"alias": "b", "type": "file", "uri": "/abs/b.csv", "primary_key": ["id"]},
        },
    }  # fmt: skip
    path.write_text(json.dumps(data))
    recipe = Recipe.load(path)
    assert recipe.sources.left.uri == str(tmp_path / "sub" / "data" / "a.csv")
    assert recipe.sources.right.uri == "/abs/b.csv"


def test_validation_collects_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "recipe_id: ' '\nname: ok\nmatch_sql: DELETE FROM x\n"
        "sources:\n  left: {alias: a, type: file, primary_key: []}\n"
        "  right: {alias: b, type: nosuch, primary_key: [id], extra_field: 1}\n"
    )
    with pytest.raises(RecipeInvalid) as info:
        Recipe.load(path)
    problems = "\n".join(info.value.problems)
    assert info.value.code == "recipe_invalid"
    assert "recipe_id: must not be blank" in problems
    assert "match_sql" in problems and "match_sql_forbidden" in problems
    assert "sources.left.primary_key" in problems
    assert "sources.right.type" in problems
    assert "sources.right.extra_field" in problems
    assert len(info.value.problems) == 5


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"alias": "a", "type": "postgres", "primary_key": ["id"]}, "needs a uri"),
        (
            {"alias": "a", "type": "postgres", "uri": "s3://b/k.csv", "primary_key": ["id"]},
            "does not fit type",
        ),
        (
            {"alias": "a", "type": "file", "primary_key": ["id"], "schema": {"x": "money"}},
            "unknown column type",
        ),
    ],
)
def test_source_rules(source: dict, message: str) -> None:
    data = {
        "recipe_id": "x", "name": "x", "match_sql": "SELECT * FROM a JOIN b ON a.id = b.id",
        "sources": {"left": source, "right": {"alias": "b", "type": "file", "primary_key": ["id"]}},
    }  # fmt: skip
    with pytest.raises(RecipeInvalid) as info:
        Recipe.from_dict(data)
    assert message in str(info.value)


def test_schema_may_map_columns_to_types() -> None:
    data = {
        "recipe_id": "x", "name": "x", "match_sql": "SELECT * FROM a JOIN b ON a.id = b.id",
        "sources": {
            "left": {"alias": "a", "type": "file", "primary_key": ["id"],
                     "schema": {"id": "text", "amount": "decimal(18,2)", "booked": "date", "note": None}},
            "right": {"alias": "b", "type": "file", "primary_key": ["id"]},
        },
    }  # fmt: skip
    recipe = Recipe.from_dict(data)
    assert recipe.sources.left.schema_ == {
        "id": "text",
        "amount": "decimal(18,2)",
        "booked": "date",
        "note": None,
    }


def test_recipe_maps_to_a_job_request(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(ORIGINAL)
    recipe = Recipe.load(path)
    run_id = uuid.uuid4()
    job = recipe.to_job_request(
        run_id=run_id, output_path=f"runs/{run_id}", source_uris={"left_src": "/d/l.csv"}
    )
    assert isinstance(job, JobRequest)
    assert job.run_id == run_id
    assert job.source(Side.LEFT).uri == "/d/l.csv"
    assert job.source(Side.RIGHT).alias == "right_src"
    assert job.primary_keys == {"left_src": ["id"], "right_src": ["payment_id"]}
    assert job.match_sql == recipe.match_sql
    assert job.recipe_id == "inv-pay"
    assert "s3cret" not in json.dumps(job.redacted())


def test_a_file_source_without_uri_must_be_given_one(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(ORIGINAL)
    with pytest.raises(SourceNotFound, match="--source left_src=PATH"):
        Recipe.load(path).to_job_request()


def test_unknown_override_alias_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(ORIGINAL)
    with pytest.raises(RecipeInvalid, match="'nope'"):
        Recipe.load(path).to_job_request(source_uris={"nope": "/x.csv"})


def test_json_schema_is_exported() -> None:
    schema = Recipe.model_json_schema(by_alias=True)
    left = schema["$defs"]["RecipeSource"]["properties"]
    assert {"alias", "type", "uri", "schema", "primary_key", "filters"} <= set(left)
