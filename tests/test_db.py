"""The storage layer on SQLite: readers take no lock, writers queue instead of failing."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from fleetpki import db


def _engine(path: Path) -> sa.Engine:
    engine = db.create_engine(db.sqlite_url(path))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    return engine


def test_open_read_transaction_does_not_block_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    reader_engine, writer_engine = _engine(path), _engine(path)
    done = threading.Event()
    with db.reader(reader_engine).connect() as reading:
        assert reading.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0  # txn now open

        def write() -> None:
            with writer_engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        thread.join(timeout=10)
        assert done.is_set(), "a writer waited on a reader's transaction"
        # snapshot isolation: the open read transaction still sees the old state
        assert reading.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    with db.reader(reader_engine).connect() as reading:
        assert reading.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1


def test_write_transactions_take_the_lock_at_begin(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    first, second = _engine(path), _engine(path)
    order: list[str] = []
    with first.begin() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM t").scalar()  # a read first, then a write

        def other() -> None:
            with second.begin() as conn2:  # waits for the first writer (busy timeout)
                order.append("second")
                conn2.exec_driver_sql("INSERT INTO t VALUES (2)")

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive(), "second writer did not wait for the first"
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
    with db.reader(first).connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("SELECT x FROM t ORDER BY rowid")] == [1, 2]
