"""``kalla serve``: run the HTTP job runner under uvicorn.

Every option is also an environment variable (``KALLA_<NAME>``); a flag wins over
the environment. SIGTERM or Ctrl-C stops accepting jobs, lets running ones finish
within ``--shutdown-grace`` seconds and leaves the rest queued for the next start.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ..config import Settings, load_settings

__all__ = ["serve"]

log = logging.getLogger("kalla.runner")


@click.command()
@click.option("--host", help="Interface to listen on [KALLA_HOST; default 127.0.0.1].")
@click.option("--port", type=int, help="TCP port, 0 for any free one [KALLA_PORT; default 8080].")
@click.option(
    "--max-concurrent-jobs",
    type=int,
    help="Jobs running at once [KALLA_MAX_CONCURRENT_JOBS; default 4].",
)
@click.option(
    "--queue-capacity",
    type=int,
    help="Jobs waiting before POST answers 503 [KALLA_QUEUE_CAPACITY; default 64].",
)
@click.option(
    "--evidence-root",
    type=click.Path(path_type=Path),
    help="Where relative output_paths go [KALLA_EVIDENCE_ROOT; default ./kalla-output].",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Job store folder [KALLA_STATE_DIR; default <evidence-root>/.kalla-runner].",
)
@click.option(
    "--api-token",
    help="Require 'Authorization: Bearer <token>' on /api/* "
    "[KALLA_API_TOKEN; prefer the variable: flags show in ps].",
)
@click.option(
    "--allowed-callback-hosts",
    help="Comma-separated callback hosts [KALLA_ALLOWED_CALLBACK_HOSTS; default loopback].",
)
@click.option(
    "--allowed-source-roots",
    help="Comma-separated folders jobs may read [KALLA_ALLOWED_SOURCE_ROOTS].",
)
@click.option(
    "--max-request-bytes",
    type=int,
    help="Largest request body [KALLA_MAX_REQUEST_BYTES; default 1 MiB].",
)
@click.option(
    "--job-memory-limit", type=int, help="Memory pool per job in bytes [KALLA_JOB_MEMORY_LIMIT]."
)
@click.option(
    "--shutdown-grace",
    "shutdown_grace_s",
    type=float,
    help="Seconds running jobs get on SIGTERM [KALLA_SHUTDOWN_GRACE_S; default 30].",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    help="Where jobs run [KALLA_ENGINE; default local].",
)
@click.option("--ray-address", help="Ray head HOST:PORT for --engine ray [KALLA_RAY_ADDRESS].")
@click.option("--ray-partitions", type=int, help="Hash buckets per Ray job [KALLA_RAY_PARTITIONS].")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="[KALLA_LOG_LEVEL; default info].",
)
def serve(**flags: Any) -> None:
    """Run the HTTP job runner (POST /api/jobs, /health, /ready, /metrics)."""
    try:
        settings = load_settings(**flags)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(f"invalid settings: {problems}") from None
    run_server(settings)


def run_server(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully."""
    import uvicorn

    from ._app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.engine == "ray":
        # Checked once, before serving: an unreachable cluster stops the start, never a job.
        from ..distributed import connect
        from ..errors import KallaError

        try:
            info = connect(settings.ray_address)
        except KallaError as err:
            raise click.ClickException(f"{err.message} ({err.code})") from None
        click.echo(
            f"kalla runner: Ray cluster {info.address}, {info.nodes} node(s), {info.cpus} CPUs",
            err=True,
        )
    sock = _bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    # Printed, not logged: whoever started the server needs the port whatever the log level.
    click.echo(
        f"kalla runner listening on http://{host if ':' not in host else f'[{host}]'}:{port} "
        f"(evidence root {settings.evidence_root}, state dir {settings.state_dir}, "
        f"max {settings.max_concurrent_jobs} concurrent jobs, queue {settings.queue_capacity})",
        err=True,
    )
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=max(int(settings.shutdown_grace_s), 1),
    )
    uvicorn.Server(config).run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
