"""The console's device list with 100,000 devices: keyset pages against OFFSET pages, same run.

    .venv/bin/python benchmarks/console_devices.py [--devices 100000] [--repeat 30]
                                                   [--db postgresql://...] [--smoke]

Fills one project with ``devices`` devices (and a second project with as many, so the project
filter matters), then times one page of 50 (rows + the match count, as the Devices page asks
the store) at the start, the middle and the end of the list, and a prefix search:

- keyset: ``Store.search_devices`` (what the console calls), ``after=<last name>``;
- baseline: the same page by ``LIMIT 50 OFFSET n`` (the REST list's way), and a substring
  search ``name LIKE '%q%'`` (what a naive search box does).

Prints the median milliseconds of each and ``ratio`` lines (baseline / keyset; > 1 = keyset
faster). ``--smoke``: 2,000 devices and 3 repeats, the same code path (a test runs it).
Bounded: filling 100,000 devices takes a few seconds on SQLite; each timing is ``repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fleetpki.platform.app import Platform
from fleetpki.platform.store.base import utcnow
from fleetpki.platform.store.schema import devices

PAGE = 50


def fill(platform: Platform, project: str, count: int) -> list[str]:
    """``count`` devices named like a production run (dev-000042); returns names in order."""
    now = utcnow()
    names = [f"dev-{n:06d}" for n in range(count)]
    with platform.store.engine.begin() as conn:
        for start in range(0, count, 5000):
            conn.execute(
                devices.insert(),
                [
                    {
                        "id": uuid.uuid4().hex,
                        "project_id": project,
                        "name": name,
                        "certificate_id": name,
                        "enabled": True,
                        "created_at": now,
                    }
                    for name in names[start : start + 5000]
                ],
            )
        if platform.store.engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE devices")
    return sorted(names)


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    run()  # warm the caches once
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def offset_page(platform: Platform, offset: int) -> Any:
    """The baseline: OFFSET pagination plus a count, ordered by name."""
    where = devices.c.project_id == "fleet"
    with platform.store.reader.connect() as conn:
        rows = conn.execute(
            sa.select(devices).where(where).order_by(devices.c.name).limit(PAGE).offset(offset)
        ).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(devices).where(where))
        return rows, total.scalar()


def substring_search(platform: Platform, text: str) -> Any:
    where = sa.and_(devices.c.project_id == "fleet", devices.c.name.like(f"%{text}%"))
    with platform.store.reader.connect() as conn:
        rows = conn.execute(
            sa.select(devices).where(where).order_by(devices.c.name).limit(PAGE)
        ).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(devices).where(where))
        return rows, total.scalar()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    parser.add_argument("--smoke", action="store_true", help="2,000 devices, 3 repeats")
    args = parser.parse_args(argv)
    count, repeat = (2_000, 3) if args.smoke else (args.devices, args.repeat)
    with tempfile.TemporaryDirectory() as folder:
        platform = Platform.open(Path(folder), args.db, credentials=False)
        try:
            store = platform.store
            for slug in ("fleet", "noise"):
                store.create_project(slug)
            started = time.perf_counter()
            names = fill(platform, "fleet", count)
            fill(platform, "noise", count)
            print(
                f"{count:,} devices in each of 2 projects ({store.engine.dialect.name}), "
                f"filled in {time.perf_counter() - started:.1f} s; pages of {PAGE}, "
                f"median of {repeat}"
            )
            depths = {"first page": 0, "middle page": count // 2, "last page": count - PAGE}
            for label, depth in depths.items():
                after = names[depth - 1] if depth else None
                keyset = median_ms(
                    lambda after=after: store.search_devices("fleet", after=after, limit=PAGE),
                    repeat,
                )
                offset = median_ms(lambda depth=depth: offset_page(platform, depth), repeat)
                print(f"{label:<12} keyset {keyset:8.2f} ms   offset {offset:8.2f} ms")
                print(f"ratio {label.replace(' ', '_')} offset/keyset {offset / keyset:.2f}x")
            prefix = names[count // 3][:-2]  # matches 100 devices
            keyset = median_ms(lambda: store.search_devices("fleet", prefix=prefix), repeat)
            naive = median_ms(lambda: substring_search(platform, prefix), repeat)
            print(f"search {prefix!r:<13} keyset {keyset:8.2f} ms   LIKE '%q%' {naive:8.2f} ms")
            print(f"ratio search like/keyset {naive / keyset:.2f}x")
        finally:
            platform.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
