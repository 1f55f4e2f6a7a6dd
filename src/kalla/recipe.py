"""Recipes: a reconciliation written down once, in YAML or JSON, and run many times.

A recipe written for the original Rust Kalla (``type``, ``primary_key``,
``match_sql``) loads unchanged. :meth:`Recipe.to_job_request` is the one,
tested mapping from a recipe to the runner's :class:`~kalla.JobRequest` (seed D2).
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .connectors import uri_scheme
from .errors import RecipeInvalid, SourceNotFound
from .job import FilterCondition, JobRequest, JobSource, Side
from .rules import Rule, check_matching
from .schema import ColumnSchema

__all__ = ["Recipe", "RecipeSource", "RecipeSources", "SourceType", "load_recipe"]


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be blank")
    return v


NonBlank = Annotated[str, AfterValidator(_not_blank)]


class SourceType(StrEnum):
    """Where a source lives. ``file`` covers local paths and ``s3://`` objects."""

    FILE = "file"
    POSTGRES = "postgres"
    BIGQUERY = "bigquery"
    ELASTICSEARCH = "elasticsearch"


_SCHEMES: dict[SourceType, set[str]] = {
    SourceType.FILE: {"file", "s3"},
    SourceType.POSTGRES: {"postgres", "postgresql"},
    SourceType.BIGQUERY: {"bigquery"},
    SourceType.ELASTICSEARCH: {"elasticsearch", "elasticsearch+https"},
}


class RecipeSource(BaseModel):
    """One side's source."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    alias: NonBlank = Field(description="Table name used for this source in match_sql.")
    source_type: SourceType = Field(alias="type")
    uri: str | None = Field(
        default=None,
        description="Where the data is; relative file paths resolve against the recipe's folder. "
        "A file source may leave it out and get it at run time (--source ALIAS=URI).",
    )
    schema_: ColumnSchema | None = Field(
        default=None,
        alias="schema",
        description="Columns the source must have: a list of names, or names mapped to types "
        "(decimal(18,2), date, text, …).",
    )
    primary_key: list[NonBlank] = Field(min_length=1, description="Columns that identify a record.")
    filters: list[FilterCondition] = Field(default_factory=list)

    @field_validator("uri")
    @classmethod
    def _resolve_relative(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not v.strip():
            return None
        base = (info.context or {}).get("base_dir")
        if base is not None and uri_scheme(v) == "file" and "://" not in v:
            path = Path(v).expanduser()
            if not path.is_absolute():
                return str((Path(base) / path).resolve())
        return v

    @model_validator(mode="after")
    def _uri_fits_type(self) -> Self:
        if self.uri is None:
            if self.source_type in (
                SourceType.POSTGRES,
                SourceType.ELASTICSEARCH,
                SourceType.BIGQUERY,
            ):
                raise ValueError(f"a {self.source_type} source needs a uri")
            return self
        scheme = uri_scheme(self.uri)
        if scheme not in _SCHEMES[self.source_type]:
            allowed = ", ".join(sorted(_SCHEMES[self.source_type]))
            raise ValueError(
                f"uri scheme {scheme!r} does not fit type {self.source_type!r} (expected {allowed})"
            )
        return self


class RecipeSources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    left: RecipeSource
    right: RecipeSource

    @model_validator(mode="after")
    def _distinct_aliases(self) -> Self:
        if self.left.alias == self.right.alias:
            raise ValueError(f"left and right use the same alias {self.left.alias!r}")
        return self

    def side(self, side: Side) -> RecipeSource:
        return self.left if side is Side.LEFT else self.right


class Recipe(BaseModel):
    """A reconciliation: two sources and the SQL that pairs their records."""

    model_config = ConfigDict(extra="forbid")

    recipe_id: NonBlank
    name: NonBlank
    description: str = ""
    match_sql: NonBlank | None = Field(
        default=None, description="One read-only SELECT/WITH query over the two aliases."
    )
    rules: list[Rule] | None = Field(
        default=None, min_length=1, description="Ordered matching rules, instead of match_sql."
    )
    match_description: str = ""
    explain_unmatched: bool = Field(
        default=True, description="Say why each unmatched record is unmatched (reason columns)."
    )
    sources: RecipeSources

    @model_validator(mode="after")
    def _one_matching_model(self) -> Self:
        check_matching(self.match_sql, self.rules)
        return self

    @field_validator("match_sql")
    @classmethod
    def _read_only(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from .errors import KallaError
        from .sql import check_read_only

        try:
            check_read_only(v)
        except KallaError as err:  # reported with every other problem, not on its own
            raise ValueError(f"{err.message} [{err.code}]") from None
        return v

    @classmethod
    def from_dict(
        cls, data: Any, *, base_dir: Path | None = None, origin: str | None = None
    ) -> Recipe:
        """Validate ``data``; every problem is reported at once in :class:`RecipeInvalid`."""
        try:
            return cls.model_validate(data, context={"base_dir": base_dir})
        except ValidationError as exc:
            raise RecipeInvalid(_problems(exc), source=origin) from None

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Load a recipe from a ``.yaml``/``.yml``/``.json`` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SourceNotFound(f"recipe file {str(path)!r} does not exist") from None
        except OSError as exc:
            raise RecipeInvalid(
                [f"cannot read the file: {exc.strerror}"], source=str(path)
            ) from None
        return cls.from_dict(_parse(text, path), base_dir=path.parent.resolve(), origin=str(path))

    def to_job_request(
        self,
        *,
        run_id: uuid.UUID | None = None,
        output_path: str = "",
        callback_url: str | None = None,
        source_uris: dict[str, str] | None = None,
    ) -> JobRequest:
        """The job that runs this recipe. ``source_uris`` supplies or overrides URIs by alias."""
        overrides = dict(source_uris or {})
        unknown = set(overrides) - {self.sources.left.alias, self.sources.right.alias}
        if unknown:
            raise RecipeInvalid(
                [f"--source names alias {a!r}, which is not in the recipe" for a in sorted(unknown)]
            )
        sources = []
        for side in Side:
            src = self.sources.side(side)
            uri = overrides.get(src.alias) or src.uri
            if not uri:
                raise SourceNotFound(
                    f"source {src.alias!r} has no uri; give one with --source {src.alias}=PATH",
                    alias=src.alias,
                )
            sources.append(
                JobSource(alias=src.alias, uri=uri, filters=src.filters, schema=src.schema_)
            )
        return JobRequest(
            run_id=run_id or uuid.uuid4(),
            callback_url=callback_url,
            match_sql=self.match_sql,
            rules=self.rules,
            explain_unmatched=self.explain_unmatched,
            sources=sources,
            output_path=output_path,
            primary_keys={
                s.alias: list(s.primary_key) for s in (self.sources.left, self.sources.right)
            },
            recipe_id=self.recipe_id,
        )


def _parse(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeInvalid([f"not valid JSON: {exc}"], source=str(path)) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeInvalid([f"not valid YAML: {exc}"], source=str(path)) from None


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "extra_forbidden":
            msg = "is not a recipe field"
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def load_recipe(path: str | Path) -> Recipe:
    """Shorthand for :meth:`Recipe.load`."""
    return Recipe.load(path)
