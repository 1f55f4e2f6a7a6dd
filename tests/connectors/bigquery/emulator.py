"""The BigQuery stand-in: PyPI ``bqemulator`` on 127.0.0.1, REST and Storage Read (gRPC).

bqemulator pins ``sqlglot<30.12`` and ``protobuf<7``, which kalla's own environment cannot
share, so it lives in its own venv, ``.venv/bqemulator``, built from the fully pinned
``emulator-requirements.txt`` the first time a test needs it (under a file lock, so two
pytest-xdist workers build it once). ``python tests/connectors/bigquery/emulator.py`` builds
it ahead of time.

As shipped the emulator does not start offline: it tries to download DuckDB's spatial
extension. The launcher disables that loader in the emulator process before starting it.
Each worker starts its own emulator (about 4 s) on free ports; readiness is polled with a
deadline, and stopping kills the whole process group.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.connectors.servers import ROOT, free_ports, wait_until

VENV = ROOT / ".venv" / "bqemulator"
REQUIREMENTS = Path(__file__).with_name("emulator-requirements.txt")
PROJECT = "kalla-test"

_LAUNCHER = """
import sys
from bqemulator.storage.engine import DuckDBEngine
DuckDBEngine._load_spatial = lambda self: None  # it would download an extension; offline here
from bqemulator.cli import main
sys.exit(main())
"""


def ensure_venv() -> Path:
    """The emulator venv's python, building the venv once if it is missing or stale."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    wanted = REQUIREMENTS.read_text()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / ".bqemulator.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == wanted and python.exists():
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "-r", str(REQUIREMENTS)],
            check=True,
        )  # fmt: skip
        stamp.write_text(wanted)
    return python


def _rest_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/bigquery/v2/projects/{PROJECT}/datasets", timeout=1):
            return True
    except Exception:
        return False


@dataclass
class BqEmulator:
    root: Path
    rest_port: int
    grpc_port: int
    proc: subprocess.Popen[bytes]

    @property
    def api_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def storage_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def settings(self, **kw: Any) -> dict[str, Any]:
        """``ConnectorContext.options['bigquery_settings']`` for this emulator."""
        return {
            "api_endpoint": self.api_endpoint,
            "storage_endpoint": self.storage_endpoint,
            "timeout": 10,
            **kw,
        }

    def env(self) -> dict[str, str]:
        return {
            "KALLA_BIGQUERY_API_ENDPOINT": self.api_endpoint,
            "KALLA_BIGQUERY_STORAGE_ENDPOINT": self.storage_endpoint,
            "KALLA_BIGQUERY_TIMEOUT": "10",
        }

    @classmethod
    def start(cls) -> BqEmulator:
        python = ensure_venv()
        root = Path(tempfile.mkdtemp(prefix="kalla-bq-"))
        log = root / "log"
        rest, grpc_port = free_ports(2)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
        env["BQEMU_LOG_LEVEL"] = "warning"
        proc = subprocess.Popen(
            [str(python), "-c", _LAUNCHER, "start", "--rest-host", "127.0.0.1",
             "--rest-port", str(rest), "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port),
             "--project", PROJECT, "--ephemeral"],
            cwd=root, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            env=env,
        )  # fmt: skip
        server = cls(root, rest, grpc_port, proc)
        try:
            wait_until(
                lambda: proc.poll() is None and _rest_up(server.api_endpoint),
                60,
                "bqemulator",
                log,
            )
        except BaseException:
            server.stop()
            raise
        return server

    def client(self) -> Any:
        """A ``google.cloud.bigquery.Client`` on the emulator, for setting tables up."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.api_endpoint),
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    print(ensure_venv())


_SHARED: BqEmulator | None = None


def shared() -> BqEmulator:
    """This process's emulator, started on first use and stopped at exit.

    The BigQuery tests and the contract suite both use it, so a pytest worker starts one.
    """
    global _SHARED
    if _SHARED is None:
        import atexit

        _SHARED = BqEmulator.start()
        atexit.register(_SHARED.stop)
    return _SHARED


_BQ_TYPES = {"int64": "INT64", "double": "FLOAT64", "bool": "BOOL", "string": "STRING",
             "large_string": "STRING", "date32[day]": "DATE", "binary": "BYTES"}  # fmt: skip


def bq_type(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_decimal(t):
        return "NUMERIC"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz else "DATETIME"
    return _BQ_TYPES[str(t)]


def load(server: BqEmulator, dataset: str, table: str, data: Any) -> str:
    """Create ``dataset.table`` with ``data``'s (Arrow) schema and rows; return its URI."""
    import base64
    import datetime as dt
    from decimal import Decimal

    from google.cloud import bigquery

    client = server.client()
    try:
        client.create_dataset(dataset, exists_ok=True)
        schema = [bigquery.SchemaField(f.name, bq_type(f.type)) for f in data.schema]
        ref = client.create_table(bigquery.Table(f"{PROJECT}.{dataset}.{table}", schema=schema))

        def js(v: Any) -> Any:
            if isinstance(v, Decimal):
                return format(v, "f")
            if isinstance(v, dt.datetime | dt.date):
                return v.isoformat()
            if isinstance(v, bytes):
                return base64.b64encode(v).decode()
            return v

        rows = [{k: js(v) for k, v in r.items()} for r in data.to_pylist()]
        for start in range(0, len(rows), 5000):
            errors = client.insert_rows_json(ref, rows[start : start + 5000])
            assert not errors, errors
    finally:
        client.close()
    return f"bigquery://{PROJECT}/{dataset}/{table}"
