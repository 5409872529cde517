"""`strangler db upgrade` and `upgrade_schema` when the store cannot be used: one clear line, exit 1, the
password never shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from strangler.store import StoreUnavailable, describe_failure, redact_url, upgrade_schema

PASSWORD = "s3cret-Passw0rd"


def with_password(url: str) -> str:
    """The test cluster trusts local connections; a password in the URL is accepted and ignored."""
    return url.replace("://postgres@", f"://postgres:{PASSWORD}@")


def db_upgrade(tmp_path: Path, store: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "strangler.yaml"
    config.write_text(yaml.safe_dump({"store": store}))
    return subprocess.run([sys.executable, "-m", "strangler", "db", "upgrade", "-c", str(config)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://ops:pw@db.internal:5432/db", "postgresql+psycopg://ops:***@db.internal:5432/db"),
        ("postgresql+psycopg://ops@db.internal/strangler", "postgresql+psycopg://ops@db.internal/strangler"),
        ("sqlite:////var/lib/strangler.db", "sqlite:////var/lib/strangler.db"),
        ("not a url", "<unparsable store URL>"),
    ],
)
def test_a_store_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_failure_is_described_by_its_first_line() -> None:
    assert describe_failure(OSError("first\n  second")) == "OSError: first"
    assert describe_failure(ValueError("")) == "ValueError: no detail"


def test_db_upgrade_against_a_stopped_postgresql_prints_one_line_and_exits_1(
    tmp_path: Path, pg_database: Any, pg_cluster: Any
) -> None:
    url = with_password(pg_database.url())
    pg_cluster.stop()
    try:
        result = db_upgrade(tmp_path, url)
        with pytest.raises(StoreUnavailable) as raised:
            upgrade_schema(url)
    finally:
        pg_cluster.start()
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith(f"error: {tmp_path / 'strangler.yaml'}: cannot upgrade the schema: the store at ")
    assert f"postgres:***@127.0.0.1:{pg_cluster.port}/{pg_database.name}" in line
    assert "unreachable" in line and "OperationalError" in line
    assert PASSWORD not in result.stderr + result.stdout and "Traceback" not in result.stderr
    assert PASSWORD not in str(raised.value) and "***" in str(raised.value)
    # the store back, the same command succeeds
    done = db_upgrade(tmp_path, url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"ok: the store at postgresql+psycopg://postgres:***@127.0.0.1:{pg_cluster.port}/"
                                   f"{pg_database.name} is at the newest schema")


def test_db_upgrade_of_an_sqlite_file_that_cannot_be_created_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-directory' / 'strangler.db'}"
    result = db_upgrade(tmp_path, url)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"the store at {url} is unreachable or failing: OperationalError: unable to open database file" in line
    assert "Traceback" not in result.stderr


def test_db_upgrade_with_a_driver_that_is_not_installed_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    result = db_upgrade(tmp_path, f"mssql+nosuchdriver://ops:{PASSWORD}@db/strangler")
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "the store at mssql+nosuchdriver://ops:***@db/strangler cannot be used: NoSuchModuleError" in line
    assert PASSWORD not in result.stderr
