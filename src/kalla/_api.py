"""``kalla.reconcile``: the library's front door."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from .evidence import RunResult
from .recipe import Recipe

__all__ = ["reconcile", "run_dir_for"]


def run_dir_for(output: str | Path, run_id: uuid.UUID) -> Path:
    """Where a run's evidence goes under an output folder: ``OUTPUT/runs/<run_id>``."""
    return Path(output) / "runs" / str(run_id)


def reconcile(
    recipe: Recipe | str | Path | dict[str, Any],
    *,
    output: str | Path = "kalla-output",
    sources: dict[str, str] | None = None,
    run_id: uuid.UUID | str | None = None,
    memory_limit: int | None = None,
    progress: Any = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> RunResult:
    """Run a recipe and return its counts and evidence paths.

    ``recipe`` is a :class:`Recipe`, a path to a YAML/JSON recipe, or a dict.
    ``sources`` maps aliases to URIs, supplying or overriding the recipe's.
    Evidence is published in ``output/runs/<run_id>/``. ``engine="ray"`` runs on the Ray
    cluster at ``ray_address`` (see ``docs/DISTRIBUTED.md``).

    >>> result = reconcile("examples/recipe.yaml", output=tmp)  # doctest: +SKIP
    >>> result.matched_count  # doctest: +SKIP
    """
    from .engine import run_job

    if isinstance(recipe, (str, Path)):
        recipe = Recipe.load(recipe)
    elif isinstance(recipe, dict):
        recipe = Recipe.from_dict(recipe)
    rid = uuid.UUID(str(run_id)) if run_id is not None else uuid.uuid4()
    request = recipe.to_job_request(run_id=rid, source_uris=sources)
    progress_fn = progress if callable(progress) else None
    ray_options = None
    if engine == "ray":
        from .distributed import RayOptions

        ray_options = RayOptions(address=ray_address)
    return run_job(
        request, run_dir_for(output, rid), memory_limit=memory_limit, progress=progress_fn,
        engine=engine, ray_options=ray_options,
    )  # fmt: skip
