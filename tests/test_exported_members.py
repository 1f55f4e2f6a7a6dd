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
