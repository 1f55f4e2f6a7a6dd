"""kalla's public names are exactly what ``__all__`` says."""

import kalla


def test_all_matches_the_public_names() -> None:
    public = {name for name in dir(kalla) if not name.startswith("_")}
    modules = {
        "connectors",
        "engine",
        "errors",
        "evidence",
        "job",
        "progress",
        "recipe",
        "schema",
        "sql",
        "cli",
        "config",
        "runner",
        "rules",
        "side",
        "distributed",
    }
    assert public - modules == set(kalla.__all__) - {"__version__"}


def test_every_error_has_a_code_and_is_a_kalla_error() -> None:
    codes = set()
    for name in kalla.errors.__all__:
        cls = getattr(kalla, name)
        assert issubclass(cls, kalla.KallaError)
        assert cls.__doc__
        codes.add(cls.code)
    assert len(codes) == len(kalla.errors.__all__)


def test_the_library_api_is_public_and_documented() -> None:
    for name in ("Engine", "EvidenceStore", "EvidenceRun", "preview_source", "Side", "RunStatus"):
        assert name in kalla.__all__
        assert getattr(kalla, name).__doc__, name
    for cls in (kalla.Engine, kalla.EvidenceStore, kalla.EvidenceRun):
        undocumented = [
            n for n in vars(cls) if not n.startswith("_") and callable(getattr(cls, n))
            and not getattr(cls, n).__doc__
        ]  # fmt: skip
        assert cls is kalla.Engine or not undocumented, (cls, undocumented)
    engine_api = ("register_uri", "register_table", "sql", "sql_stream", "execute_join",
                  "execute_join_stream", "find_orphans", "find_orphans_stream", "tables")  # fmt: skip
    for name in engine_api:
        doc = getattr(kalla.Engine, name).__doc__ or ""
        assert doc, name
