"""Settings of the HTTP runner (``kalla serve``): one validated object, built on demand.

Every field can be set by a ``kalla serve`` flag or by an environment variable named
``KALLA_<FIELD>`` (``KALLA_PORT``, ``KALLA_API_TOKEN``, ...). Lists are comma-separated
in the environment (``KALLA_ALLOWED_CALLBACK_HOSTS=api.internal,127.0.0.1``).

Nothing is read at import time: :func:`load_settings` builds the object, so tests and
embedders construct as many independent runners as they like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["LOOPBACK_HOSTS", "Settings", "load_settings"]

#: Callback hosts allowed when none are configured: this machine only (no SSRF).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Configuration of one runner process. Durations are seconds, sizes bytes."""

    model_config = SettingsConfigDict(env_prefix="KALLA_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 picks a free one).")
    max_concurrent_jobs: int = Field(4, ge=1, description="Jobs running at once (seed B3).")
    queue_capacity: int = Field(64, ge=1, description="Jobs waiting to run before POST gets 503.")
    evidence_root: Path = Field(
        Path("kalla-output"), description="Where relative output_paths go; also readable by jobs."
    )
    state_dir: Path | None = Field(
        None, description="Folder of the job store (SQLite); default <evidence_root>/.kalla-runner."
    )
    api_token: SecretStr | None = Field(
        None, description="When set, /api/* needs 'Authorization: Bearer <token>'."
    )
    allowed_callback_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(LOOPBACK_HOSTS),
        description="Host names callback URLs may point at; '*' allows any (not recommended).",
    )
    allowed_source_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Local folders jobs may read, besides the evidence root.",
    )
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body.")
    job_memory_limit: int | None = Field(
        None, ge=1, description="Memory pool per job, in bytes (DataFusion spills above it)."
    )
    worker_max_jobs: int = Field(
        100, ge=1, description="Jobs a worker process runs before it is replaced by a fresh one."
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long running jobs may take to finish."
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503 answers.")
    callback_connect_timeout_s: float = Field(5.0, gt=0)
    callback_read_timeout_s: float = Field(10.0, gt=0)
    callback_pool_timeout_s: float = Field(5.0, gt=0)
    callback_attempts: int = Field(
        8, ge=1, description="Tries per delivery round of a complete/error callback."
    )
    callback_backoff_initial_s: float = Field(0.2, gt=0, description="First retry wait.")
    callback_backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between tries.")
    callback_redelivery_s: float = Field(
        60.0, gt=0, description="After a round of tries fails, wait this long before the next."
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    engine: Literal["local", "ray"] = Field(
        "local", description="Run jobs in worker processes (local) or on a Ray cluster (ray)."
    )
    ray_address: str | None = Field(
        None, description="The Ray cluster's head, HOST:PORT or 'auto' (engine=ray)."
    )
    ray_partitions: int | None = Field(
        None, ge=1, description="Hash buckets per Ray job; default one per cluster CPU."
    )

    @field_validator("allowed_callback_hosts", "allowed_source_roots", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("allowed_callback_hosts")
    @classmethod
    def _lower_hosts(cls, value: list[str]) -> list[str]:
        return [h.lower().strip("[]") for h in value]

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        # Resolve once so admission checks compare real, symlink-free paths.
        root = self.evidence_root.expanduser().resolve()
        object.__setattr__(self, "evidence_root", root)
        state = (self.state_dir or root / ".kalla-runner").expanduser().resolve()
        object.__setattr__(self, "state_dir", state)
        roots = [p.expanduser().resolve() for p in self.allowed_source_roots]
        object.__setattr__(self, "allowed_source_roots", roots)
        return self

    @property
    def store_path(self) -> Path:
        """The SQLite file of the job store."""
        assert self.state_dir is not None  # set by the validator
        return self.state_dir / "jobs.sqlite3"

    @property
    def source_roots(self) -> list[Path]:
        """Every folder a local source may lie in: the allowed roots and the evidence root."""
        return [*self.allowed_source_roots, self.evidence_root]


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``KALLA_*`` environment variables, with ``overrides`` (e.g. CLI flags) on top.

    ``None`` overrides are dropped, so unset CLI flags fall back to the environment.
    """
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
