"""Device search with keyset pages: the same devices as a plain sort, and every page an index
range scan (the query plan says so, on SQLite and PostgreSQL; no timing)."""

from __future__ import annotations

import random

import sqlalchemy as sa

from fleetpki.platform.app import Platform
from fleetpki.platform.store.devices import device_search_query, insert_device


def fill(platform: Platform, count: int, seed: int = 7) -> list[tuple[str, str | None]]:
    """``count`` devices with varied names (case, digits, punctuation, non-ASCII); some have no
    certificate ID yet (pre-created)."""
    rng = random.Random(seed)
    alphabet = "aAbB09-_.:@zZ"
    made = []
    with platform.store.engine.begin() as conn:
        for n in range(count):
            stem = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            name = f"{stem}{n}" if n % 17 else f"é{stem}{n}"
            cid = None if n % 11 == 0 else f"id-{rng.randint(0, 99)}-{n}"
            insert_device(conn, "acme", name, cid)
            made.append((name, cid))
    return made


def walk(platform: Platform, **search: str) -> list[str]:
    """Every page forward, then every page backward from the end: both must agree."""
    forward, after = [], None
    while True:
        page = platform.store.search_devices("acme", after=after, limit=7, **search)
        forward += [d["id"] for d in page.items]
        if page.after is None:
            break
        after = page.after
    backward, before = [], page.before
    while before is not None:
        page = platform.store.search_devices("acme", before=before, limit=7, **search)
        backward = [d["id"] for d in page.items] + backward
        before = page.before
    assert backward == forward[: len(backward)]
    return forward


def test_keyset_pages_match_a_byte_order_sort(acme: Platform) -> None:
    made = fill(acme, 300)
    ids = {(d["name"]): d["id"] for d in acme.store.search_devices("acme", limit=1000).items}
    by_name = sorted(made, key=lambda m: m[0].encode())
    assert walk(acme) == [ids[name] for name, _ in by_name]
    for prefix in ("a", "aA", "Z", "é", "0", "nothing-starts-so"):
        expected = [ids[n] for n, _ in by_name if n.startswith(prefix)]
        assert walk(acme, prefix=prefix) == expected, prefix
        assert acme.store.search_devices("acme", prefix=prefix).total == len(expected)
    with_id = sorted((m for m in made if m[1]), key=lambda m: m[1].encode())  # type: ignore[union-attr]
    assert walk(acme, by="certificateId") == [ids[n] for n, _ in with_id]
    expected = [ids[n] for n, c in with_id if c.startswith("id-4")]  # type: ignore[union-attr]
    assert walk(acme, by="certificateId", prefix="id-4") == expected
    # Another project's devices never show.
    assert acme.store.search_devices("other").total == 0


def plan(platform: Platform, by: str, **search: str) -> str:
    engine = platform.store.engine
    dialect = engine.dialect.name
    query, key = device_search_query(dialect, "acme", by=by, **search)
    query = query.order_by(key).limit(51)
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if dialect == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
            return "\n".join(str(r[-1]) for r in rows)
        # Seq scans and sorts made prohibitively expensive: if the plan still has one, no index
        # serves this query (the question a timing could only answer noisily).
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_sort = off")
        return "\n".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + sql).all())


def test_every_search_is_an_index_range_scan(acme: Platform) -> None:
    fill(acme, 200)
    with acme.store.engine.begin() as conn:
        if acme.store.engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE devices")
    for by in ("name", "certificateId"):
        for search in ({}, {"prefix": "ab"}, {"after": "m"}, {"prefix": "a", "before": "aZ"}):
            shown = plan(acme, by, **search)
            if acme.store.engine.dialect.name == "sqlite":
                # uq_device_name / uq_device_certificate_id: (project_id, name|certificate_id)
                assert "USING INDEX sqlite_autoindex_devices" in shown, shown
                assert "TEMP B-TREE" not in shown, shown  # no sort: the index gives the order
            else:
                column = "name" if by == "name" else "certificate_id"
                assert f"ix_devices_{column}_c" in shown, shown
                assert "Sort" not in shown and "Seq Scan" not in shown, shown


def test_count_is_an_index_scan_too(acme: Platform) -> None:
    if acme.store.engine.dialect.name != "sqlite":
        return  # PostgreSQL counts through the same index range (checked above for the rows)
    query, _ = device_search_query("sqlite", "acme", prefix="ab")
    counted = sa.select(sa.func.count()).select_from(query.subquery())
    sql = str(counted.compile(acme.store.engine, compile_kwargs={"literal_binds": True}))
    with acme.store.engine.connect() as conn:
        shown = "\n".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "INDEX sqlite_autoindex_devices" in shown and "SCAN devices\n" not in shown + "\n"


def test_matches_are_counted_up_to_a_bound(acme: Platform, monkeypatch: object) -> None:
    import fleetpki.platform.store.devices as store_devices

    fill(acme, 30)
    monkeypatch.setattr(store_devices, "COUNT_LIMIT", 12)  # type: ignore[attr-defined]
    page = acme.store.search_devices("acme", limit=5)
    assert (page.total, page.more, len(page.items)) == (12, True, 5)
    few = acme.store.search_devices("acme", prefix=page.items[0]["name"])
    assert few.total >= 1 and few.more is False
