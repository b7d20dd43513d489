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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JOURNAL = ".journal.jsonl"
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

    def write_manifests(self, failures: list[tuple[str, str]]) -> None:
        """manifest.csv and manifest.json (every device of the folder), failures.csv.

        A device journaled again this run (its files had gone) drops its older row, so the
        journal and the manifests list each device once.
        """
        out = self.out
        repeats = collections.Counter(
            row["source"]
            for row in (self.rows() if self._stale else ())
            if row["source"] in self._stale
        )
        with (
            open(out / ".manifest.csv.tmp", "w", newline="", encoding="utf-8") as csv_handle,
            open(out / ".manifest.json.tmp", "w", encoding="utf-8") as json_handle,
            open(out / ".journal.tmp", "w", encoding="utf-8") as journal,
        ):
            writer = csv.writer(csv_handle)
            writer.writerow([*MANIFEST_FIELDS, *self.files, "ca_chain"])
            head = {"project": self.project, "ca": self.ca_name, "ca_chain": "ca-chain.pem"}
            json_handle.write(json.dumps(head)[:-1] + ', "devices": [')
            separator = "\n  "
            for line, row in self._lines():
                if repeats[row["source"]] > 1:
                    repeats[row["source"]] -= 1
                    continue
                files = [row["files"].get(k, "") for k in self.files]
                writer.writerow([*(row[k] for k in MANIFEST_FIELDS), *files, "ca-chain.pem"])
                json_handle.write(separator + line)
                journal.write(line + "\n")
                separator = ",\n  "
            json_handle.write("\n]}\n")
        with open(out / "failures.csv", "w", newline="", encoding="utf-8") as handle:
            failed = csv.writer(handle)
            failed.writerow(["source", "reason"])
            failed.writerows(failures)
        os.replace(out / ".journal.tmp", self.path)  # also drops rows cut short by a kill
        os.replace(out / ".manifest.csv.tmp", out / "manifest.csv")
        os.replace(out / ".manifest.json.tmp", out / "manifest.json")
