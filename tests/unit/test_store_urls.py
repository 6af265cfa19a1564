"""Database URL handling of ``open_store`` (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.errors import ConfigError
from headwater.store.sql import default_sqlite_url, normalise_url


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@db:5433/hw", "postgresql+asyncpg"),
        ("postgres://u@db/hw", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@db/hw", "postgresql+asyncpg"),
        ("postgresql+psycopg://u@db/hw", "postgresql+asyncpg"),
    ],
)
def test_postgres_urls(url: str, driver: str) -> None:
    normal = normalise_url(url)
    assert normal.drivername == driver
    assert normal.database == "hw"


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = normalise_url("sqlite:///data/hw.db")
    assert relative.drivername == "sqlite+aiosqlite"
    assert relative.database == str(tmp_path.resolve() / "data" / "hw.db")
    absolute = normalise_url("sqlite:////var/lib/hw/hw.db")
    assert absolute.database == "/var/lib/hw/hw.db"
    assert normalise_url("sqlite+aiosqlite:////x.db").database == "/x.db"


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "mysql://u@h/db", "redis://localhost", "nonsense"]
)
def test_rejected_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        normalise_url(url)


def test_default_sqlite_url(tmp_path: Path) -> None:
    url = default_sqlite_url(tmp_path)
    assert url.startswith("sqlite:////")
    assert normalise_url(url).database == str(tmp_path.resolve() / ".headwater" / "headwater.db")
