"""SQLAlchemy engines for the store (SQLite by default, PostgreSQL in production) and Alembic upgrades."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from strangler.errors import StranglerError

_MIGRATION_LOCK = 0x5374_726E  # pg_advisory_xact_lock key held while migrating ("Strn")


class StoreUnavailable(StranglerError):
    """The store cannot be reached or answered with an error; callers keep their last known state."""


def redact_url(url: str) -> str:
    """The URL as it may be shown: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable store URL>"


def describe_failure(exc: BaseException) -> str:
    """One line saying what failed: the driver's own first line rather than SQLAlchemy's wrapping."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return f"{cause.__class__.__name__}: {lines[0] if lines else 'no detail'}"[:500]


def create_store_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for the store: SQLite in WAL mode with immediate write transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _sqlite_immediate_transactions(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:  # a NullPool (migrations) takes no size
        kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("connect_args", {"connect_timeout": 3})
    return create_engine(url, **kwargs)


def _sqlite_immediate_transactions(engine: Engine) -> None:
    # pysqlite's own BEGIN handling defers locks, so two writers can deadlock on upgrade; take the write
    # lock at BEGIN instead (the SQLAlchemy-documented recipe).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade_schema(url: str) -> None:
    """Bring the store's schema to the newest version (Alembic `upgrade head`).

    Raises StoreUnavailable, naming the store (password masked) and what failed, when the store cannot be
    reached or fails; nothing else of the database driver's escapes.
    """
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # before import: it logs while loading plugins
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("strangler.store") / "migrations"))
    try:
        engine = create_store_engine(url, poolclass=NullPool) if make_url(url).get_backend_name() != "sqlite" else (
            create_store_engine(url)
        )
    except (SQLAlchemyError, ImportError) as exc:  # an unknown dialect or a driver that is not installed
        raise StoreUnavailable(f"the store at {redact_url(url)} cannot be used: {describe_failure(exc)}") from exc
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # gateways starting together on a new store: one migrates, the others wait and find it done
                # (SQLite's immediate transactions serialise them already)
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"the store at {redact_url(url)} is unreachable or failing: "
                               f"{describe_failure(exc)}") from exc
    finally:
        engine.dispose()
