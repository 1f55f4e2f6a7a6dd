"""``kalla run | validate | demo | schema`` (and ``serve`` when the runner is installed).

Bad input becomes a clear message and exit code 2, runtime failures exit 1; with
``--json`` stdout holds exactly one JSON object either way.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from .errors import InputError, KallaError

__all__ = ["main"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``1000000`` → bytes."""
    m = _SIZE.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size like 512M or 2G")
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * _UNITS[unit])


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _fail(err: KallaError, *, as_json: bool, run_id: str | None = None) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {"run_id": run_id, "error": err.message, "code": err.code, "stage": err.stage}
            )
        )
    else:
        _console().print(f"[bold red]error[/] [dim]({err.code})[/]: {err.message}", highlight=False)
    sys.exit(2 if isinstance(err, InputError) else 1)


@click.group()
@click.version_option(package_name="kalla")
def main() -> None:
    """kalla: reconcile two sources with a SQL matching rule and keep exact evidence."""


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="ALIAS=URI",
    help="Supply or override a source URI.",
)
@click.option(
    "--output",
    "-o",
    default="kalla-output",
    show_default=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="Evidence goes to OUTPUT/runs/<run_id>/ (a local folder or an S3 prefix).",
)
@click.option("--run-id", type=click.UUID, help="Use this run id instead of a new one.")
@click.option(
    "--memory-limit", metavar="SIZE", help="Bound the engine's memory (e.g. 2G); spills to disk."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (the completion payload) on stdout.",
)
@click.option(
    "--no-reasons",
    is_flag=True,
    help="Leave out the _reason/_closest_candidate columns of unmatched records (faster).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    envvar="KALLA_ENGINE",
    help="Run in this process, or on a Ray cluster (needs kalla[ray]).",
)
@click.option(
    "--ray-address",
    metavar="HOST:PORT",
    envvar="KALLA_RAY_ADDRESS",
    help="The Ray cluster's head; default: this machine's Ray.",
)
def run(recipe: Path, sources: tuple[str, ...], output: str, run_id: uuid.UUID | None,
        memory_limit: str | None, as_json: bool, no_reasons: bool, engine: str,
        ray_address: str | None) -> None:  # fmt: skip
    """Run RECIPE and write its evidence."""
    from ._api import reconcile
    from .progress import ProgressEvent

    rid = run_id or uuid.uuid4()
    overrides: dict[str, str] = {}
    for item in sources:
        alias, sep, uri = item.partition("=")
        if not sep or not alias or not uri:
            raise click.BadParameter(f"{item!r} is not ALIAS=URI", param_hint="--source")
        overrides[alias.strip()] = uri.strip()
    limit = parse_size(memory_limit) if memory_limit else None
    console = _console()
    interactive = console.is_terminal and not as_json
    status = console.status("starting…") if interactive else None

    def progress(event: ProgressEvent) -> None:
        if status is not None:
            what = {
                "staging": f"registering {event.source}",
                "matching": "matching",
                "writing_results": "writing evidence",
                "publishing": "publishing",
            }[event.stage.value]
            status.update(f"{what}…")

    try:
        if status is not None:
            status.start()
        result = reconcile(
            recipe,
            output=output,
            sources=overrides,
            run_id=rid,
            memory_limit=limit,
            progress=progress,
            engine=engine,
            ray_address=ray_address,
            explain_unmatched=False if no_reasons else None,
        )
    except KallaError as err:
        if status is not None:
            status.stop()
        _fail(err, as_json=as_json, run_id=str(rid))
        return
    if status is not None:
        status.stop()
    if as_json:
        click.echo(json.dumps(result.to_completion()))
    else:
        _summary(result)


def _summary(result: Any) -> None:
    from rich.table import Table

    meta = result.metadata
    table = Table(title=f"run {result.run_id}", show_header=True, title_justify="left")
    table.add_column("")
    table.add_column("left", justify="right")
    table.add_column("right", justify="right")
    left, right = meta.counts["left"], meta.counts["right"]
    table.add_row("source", meta.sources["left"].alias, meta.sources["right"].alias)
    table.add_row("records", f"{left.records:,}", f"{right.records:,}")
    table.add_row("matched records", f"{left.matched_records:,}", f"{right.matched_records:,}")
    table.add_row("unmatched", f"{left.unmatched_records:,}", f"{right.unmatched_records:,}")
    rate = lambda c: f"{(c.matched_records / c.records if c.records else 0):.1%}"  # noqa: E731
    table.add_row("match rate", rate(left), rate(right))
    console = _console()
    console.print(table)
    console.print(f"matched pairs: [bold]{result.matched_count:,}[/]")
    console.print(f"evidence: {result.run_dir}", highlight=False, soft_wrap=True)
    for name, path in result.output_paths.model_dump(exclude_none=True).items():
        console.print(f"  {name}: {path}", highlight=False, soft_wrap=True)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
def validate(recipe: Path) -> None:
    """Check RECIPE and print every problem found."""
    from .errors import RecipeInvalid
    from .recipe import Recipe

    try:
        loaded = Recipe.load(recipe)
    except RecipeInvalid as err:
        console = _console()
        console.print(
            f"[bold red]{recipe}[/]: {len(err.problems)} problem(s)",
            highlight=False,
            soft_wrap=True,
        )
        for problem in err.problems:
            console.print(f"  - {problem}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KallaError as err:
        _fail(err, as_json=False)
        return
    click.echo(
        f"{recipe}: ok (recipe {loaded.recipe_id!r}, {loaded.sources.left.alias} ↔ {loaded.sources.right.alias})"
    )


@main.command()
@click.option(
    "--output", "-o", default="kalla-output", show_default=True, type=click.Path(path_type=Path)
)
def demo(output: Path) -> None:
    """Reconcile the bundled invoices and payments and show where the evidence is."""
    from ._api import reconcile
    from .recipe import Recipe

    recipe_path = _examples() / "recipe.yaml"
    try:
        recipe = Recipe.load(recipe_path)
        click.echo(f"Reconciling {recipe.name!r} from {recipe_path.parent} …", err=True)
        result = reconcile(recipe, output=output)
    except KallaError as err:
        _fail(err, as_json=False)
        return
    _summary(result)


def _examples() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parent / "examples", here.parents[2] / "examples"):
        if (candidate / "recipe.yaml").is_file():
            return candidate
    raise click.ClickException("the bundled examples are not installed")


@main.group()
def schema() -> None:
    """Print JSON Schemas of kalla's inputs."""


@schema.command("recipe")
def schema_recipe() -> None:
    """The JSON Schema of a recipe."""
    from .recipe import Recipe

    click.echo(json.dumps(Recipe.model_json_schema(by_alias=True), indent=2))


@schema.command("job")
def schema_job() -> None:
    """The JSON Schema of a job request (POST /api/jobs)."""
    from .job import JobRequest

    click.echo(json.dumps(JobRequest.model_json_schema(by_alias=True), indent=2))


try:  # the runner is an optional extra
    from .runner.cli import serve

    main.add_command(serve)
except ImportError:  # pragma: no cover - depends on installed extras
    pass
