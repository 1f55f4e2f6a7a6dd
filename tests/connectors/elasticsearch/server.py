"""The Elasticsearch stand-in: PyPI ``noida-db`` (an Elasticsearch 8-compatible server) on 127.0.0.1.

``noida-db`` is a Python wrapper around one native binary; the binary is started directly
(no wrapper process to outlive), in its own session, on a free port with its own data folder,
so pytest-xdist workers never share state. Readiness is polled with a deadline; stopping
kills the process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.connectors.servers import free_ports, wait_until


def _binary() -> Path:
    import noida_db

    path = Path(noida_db.__file__).with_name("noida-db")
    if not path.exists():
        raise RuntimeError(f"noida-db's server binary is missing at {path}")
    return path


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


@dataclass
class EsServer:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uri(
        self, index: str, *, user: str | None = None, password: str | None = None, **params: str
    ) -> str:
        auth = f"{user}:{password}@" if user and password else (f"{user}@" if user else "")
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"elasticsearch://{auth}127.0.0.1:{self.port}/{index}" + (
            f"?{query}" if query else ""
        )

    @classmethod
    def start(cls) -> EsServer:
        root = Path(tempfile.mkdtemp(prefix="kalla-es-"))
        log = root / "log"
        for _attempt in range(3):  # a free port can be taken between choosing and binding
            port = free_ports(1)[0]
            proc = subprocess.Popen(
                [str(_binary()), "start", "--only", "elasticsearch", "--host", "127.0.0.1",
                 "--elasticsearch-port", str(port), "--data-dir", str(root / "data")],
                cwd=root, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            server = cls(root, port, proc)
            try:
                wait_until(
                    lambda s=server: s.proc.poll() is not None or _up(s.url), 30, "noida-db", log
                )
            except BaseException:
                server.stop()
                raise
            if proc.poll() is None:
                return server
        server.stop()
        raise RuntimeError(f"noida-db did not start: {log.read_text(errors='replace')[-2000:]}")

    def client(self) -> Any:
        from elasticsearch import Elasticsearch

        return Elasticsearch(self.url, request_timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


_SHARED: EsServer | None = None


def shared() -> EsServer:
    """This process's server, started on first use and stopped at exit (the Elasticsearch
    tests and the contract suite share it)."""
    global _SHARED
    if _SHARED is None:
        import atexit

        _SHARED = EsServer.start()
        atexit.register(_SHARED.stop)
    return _SHARED


def es_field(t: Any) -> dict[str, Any]:
    """The mapping of an Arrow type, as a finance index would map it."""
    import pyarrow as pa

    if pa.types.is_decimal(t):
        return {"type": "scaled_float", "scaling_factor": 10**t.scale}
    if pa.types.is_integer(t):
        return {"type": "long"}
    if pa.types.is_floating(t):
        return {"type": "double"}
    if pa.types.is_boolean(t):
        return {"type": "boolean"}
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return {"type": "date"}
    return {"type": "keyword"}


def load(server: EsServer, index: str, data: Any) -> str:
    """Create ``index`` mapped from ``data``'s (Arrow) schema, bulk-load its rows; return its URI."""
    import datetime as dt
    from decimal import Decimal

    from elasticsearch import helpers

    client = server.client()
    try:
        client.indices.create(
            index=index, mappings={"properties": {f.name: es_field(f.type) for f in data.schema}}
        )

        def js(v: Any) -> Any:
            if isinstance(v, Decimal):
                return float(v)
            if isinstance(v, dt.datetime | dt.date):
                return v.isoformat()
            return v

        actions = (
            {"_index": index, "_id": str(i), "_source": {k: js(v) for k, v in row.items()}}
            for i, row in enumerate(data.to_pylist())
        )
        helpers.bulk(client, actions, refresh="wait_for")
    finally:
        client.close()
    return server.uri(index)
