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
    explain_unmatched: bool | None = None,
) -> RunResult:
    """Run a recipe and return its counts and evidence paths.

    ``recipe`` is a :class:`Recipe`, a path to a YAML/JSON recipe, or a dict.
    ``sources`` maps aliases to URIs, supplying or overriding the recipe's.
    Evidence is published in ``output/runs/<run_id>/``; ``output`` may be ``s3://bucket/prefix``
    (the run is written locally, then uploaded, metadata last). ``engine="ray"`` runs on the Ray
    cluster at ``ray_address`` (see ``docs/DISTRIBUTED.md``). ``explain_unmatched`` overrides the
    recipe's choice of reason columns on unmatched records.

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
    if explain_unmatched is not None:
        request = request.model_copy(update={"explain_unmatched": explain_unmatched})
    progress_fn = progress if callable(progress) else None
    ray_options = None
    if engine == "ray":
        from .distributed import RayOptions

        ray_options = RayOptions(address=ray_address)
    if str(output).startswith("s3://"):
        return _run_to_s3(request, str(output), rid, memory_limit, progress_fn, engine, ray_options)
    return run_job(
        request, run_dir_for(output, rid), memory_limit=memory_limit, progress=progress_fn,
        engine=engine, ray_options=ray_options,
    )  # fmt: skip


def _run_to_s3(
    request: Any, output: str, rid: uuid.UUID, memory_limit: int | None, progress: Any,
    engine: str, ray_options: Any,
) -> RunResult:  # fmt: skip
    """Run into a local temporary folder, then upload it: data files first, metadata last."""
    import tempfile

    from .connectors.s3 import published_status, upload_run
    from .engine import run_job
    from .errors import EvidenceExists, KallaError
    from .evidence import OutputPaths

    dest = f"{output.rstrip('/')}/runs/{rid}/"
    if published_status(dest) == "completed":
        raise EvidenceExists(f"run {rid} is already published at {dest}; use a new run_id")
    with tempfile.TemporaryDirectory(prefix="kalla-run-") as tmp:
        local = run_dir_for(tmp, rid)
        try:
            result = run_job(
                request, local, memory_limit=memory_limit, progress=progress,
                engine=engine, ray_options=ray_options,
            )  # fmt: skip
        except KallaError:
            if local.is_dir():  # the failed run's metadata.json, so S3 tells the same story
                upload_run(local, dest)
            raise
        upload_run(local, dest)
    paths = {
        k: dest + Path(v).name for k, v in result.output_paths.model_dump(exclude_none=True).items()
    }
    return result.model_copy(update={"output_paths": OutputPaths(**paths), "run_dir": dest})
