"""The journal of a bulk run's output folder, and the manifests made from it.

One JSON row per device whose files are written (``.journal.jsonl``), appended after the files,
so a row means "done". A rerun reads it to skip what is done; at the end of every run the
journal is compacted and ``manifest.csv`` / ``manifest.json`` / ``failures.csv`` are written
from it (each device once, whichever run issued it).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JOURNAL = ".journal.jsonl"
CA_CHAIN = "ca-chain.pem"
_QUOTE_OR_EOL = re.compile(r'["\r\n]')  # with ",", what makes csv.writer (excel) quote a field
MANIFEST_FIELDS = ("certificate_id", "serial", "fingerprint_sha256", "not_after", "source")


class Journal:
    """The journal of output folder ``out`` for a run of ``project`` with CA ``ca_name``."""

    def __init__(self, out: Path, project: str, ca_name: str, files: list[str]) -> None:
        self.out, self.project, self.ca_name, self.files = out, project, ca_name, files
        self.path = out / JOURNAL
        self._stale: set[str] = set()  # journaled by an earlier run, files missing since

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every complete row, oldest first."""
        for _, row in self._lines():
            yield row

    def _lines(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):  # a line cut short by a kill
                    row = json.loads(line)
                    if isinstance(row, dict) and "source" in row and "files" in row:
                        yield line.rstrip("\n"), row

    def end_cut_row(self) -> None:
        """End a row a kill cut short, so the next appended row starts on its own line."""
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")

    def done(self) -> set[str]:
        """Sources journaled whose certificate file is still there."""
        prefix = f"{self.out}{os.sep}"
        done: set[str] = set()
        for row in self.rows():
            if os.path.exists(prefix + row["files"]["crt_der"]):
                done.add(row["source"])
            else:  # files gone since: this run journals it again, the manifest keeps the last
                self._stale.add(row["source"])
        return done

    def manifest_stream(self) -> ManifestStream:
        """Manifests written device by device (``add``), for a folder with no journal yet."""
        return ManifestStream(self)

    def write_manifests(self, failures: list[tuple[str, str]]) -> None:
        """manifest.csv and manifest.json (every device of the folder), failures.csv.

        A device journaled again this run (its files had gone) drops its older row, so the
        journal and the manifests list each device once.
        """
        repeats = collections.Counter(
            row["source"]
            for row in (self.rows() if self._stale else ())
            if row["source"] in self._stale
        )
        stream = ManifestStream(self)
        with (
            contextlib.closing(stream),
            open(self.out / ".journal.tmp", "w", encoding="utf-8") as journal,
        ):
            for line, row in self._lines():
                if repeats[row["source"]] > 1:
                    repeats[row["source"]] -= 1
                    continue
                files = [row["files"].get(k, "") for k in self.files]
                stream.add([line], [[*(row[k] for k in MANIFEST_FIELDS), *files, CA_CHAIN]])
                journal.write(line + "\n")
            os.replace(self.out / ".journal.tmp", self.path)  # also drops rows cut by a kill
            stream.finish(failures)


class ManifestStream:
    """manifest.csv and manifest.json of a journal, written as devices come.

    Everything goes to hidden ``.tmp`` files renamed into place by ``finish``: a run that fails
    or is killed leaves the previous manifests (or none), never half of one.
    """

    def __init__(self, journal: Journal) -> None:
        self.out = journal.out
        self._csv_file = open(self.out / ".manifest.csv.tmp", "w", newline="", encoding="utf-8")
        self._json = open(self.out / ".manifest.json.tmp", "w", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow([*MANIFEST_FIELDS, *journal.files, "ca_chain"])
        head = {"project": journal.project, "ca": journal.ca_name, "ca_chain": CA_CHAIN}
        self._json.write(json.dumps(head)[:-1] + ', "devices": [')
        self._separator = "\n  "

    def add(self, rows: list[str], manifest: list[list[str]]) -> None:
        """Journal ``rows`` (JSON text, with or without newline) and the same as CSV rows."""
        if rows:
            self._json.write(self._separator + ",\n  ".join(r.rstrip("\n") for r in rows))
            self._separator = ",\n  "
        # csv.writer costs ~7 µs a row; a row with nothing to quote is its fields joined.
        plain: list[str] = []
        for fields in manifest:
            line = ",".join(fields)
            if line.count(",") == len(fields) - 1 > 0 and _QUOTE_OR_EOL.search(line) is None:
                plain.append(line + "\r\n")
                continue
            self._csv_file.write("".join(plain))
            plain.clear()
            self._csv.writerow(fields)
        self._csv_file.write("".join(plain))

    def finish(self, failures: list[tuple[str, str]]) -> None:
        """Close the manifests, write failures.csv, and rename them into place."""
        self._json.write("\n]}\n")
        self.close()
        with open(self.out / "failures.csv", "w", newline="", encoding="utf-8") as handle:
            failed = csv.writer(handle)
            failed.writerow(["source", "reason"])
            failed.writerows(failures)
        os.replace(self.out / ".manifest.csv.tmp", self.out / "manifest.csv")
        os.replace(self.out / ".manifest.json.tmp", self.out / "manifest.json")

    def close(self) -> None:
        self._csv_file.close()
        self._json.close()
