"""Where bulk signing reads CSRs from: a folder, a CSV manifest, a tar or zip archive.

Each source yields ``Item``s lazily (a million CSRs never sit in memory at once) and can count
them first, for the progress bar's ETA.
"""

from __future__ import annotations

import csv
import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from fleetpki.errors import InputError

MAX_CSR_BYTES = 64 << 10  # a P-256 CSR is ~300 bytes; RSA-3072 ~1 KiB


class Item(NamedTuple):
    """One CSR to sign (or one device to create): ``source`` names it in reports and manifests.

    The CSR is ``data`` (already read, from an archive) or the file at ``path`` (read by the
    worker, so the main process does no per-file I/O); ``certificate_id`` comes from a CSV
    manifest or ``--id-format``, else from the CSR's CN. A NamedTuple: items cross to the
    worker processes, and tuples pickle several times faster than dataclasses.
    """

    source: str
    path: str | None = None
    data: bytes | None = None
    certificate_id: str | None = None


class CSRSource:
    """A folder, CSV manifest, tar or zip of CSRs; raises InputError for anything else."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.kind = "folder"
        elif not self.path.is_file():
            raise InputError(f"{path}: no such file or folder")
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
        elif tarfile.is_tarfile(self.path):
            self.kind = "tar"
        elif self.path.suffix.lower() == ".csv":
            self.kind = "csv"
            self._check_csv_header()
        else:
            raise InputError(
                f"{path}: expected a folder of CSRs, a CSV manifest (.csv), a tar or a zip"
            )

    # -- folder ---------------------------------------------------------------------------

    def _folder_files(self) -> Iterator[str]:
        for root, dirs, files in os.walk(os.path.join(self.path, "")):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    yield os.path.join(root, name)

    # -- CSV ------------------------------------------------------------------------------

    def _check_csv_header(self) -> None:
        with open(self.path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        missing = {"certificate_id", "csr_path"} - {h.strip() for h in header}
        if missing:
            raise InputError(
                f"{self.path}: CSV header must name certificate_id and csr_path "
                f"(missing: {', '.join(sorted(missing))})"
            )

    def _csv_rows(self) -> Iterator[Item]:
        base = self.path.parent
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            for row in reader:
                csr_path = (row.get("csr_path") or "").strip()
                certificate_id = (row.get("certificate_id") or "").strip() or None
                source = csr_path or f"{self.path.name} line {reader.line_num}"
                yield Item(source, path=str(base / csr_path), certificate_id=certificate_id)

    # -- archives -------------------------------------------------------------------------

    def _tar_members(self) -> Iterator[tuple[str, bytes | None]]:
        with tarfile.open(self.path, mode="r:*") as archive:
            for member in archive:
                if not member.isfile() or Path(member.name).name.startswith("."):
                    continue
                if member.size > MAX_CSR_BYTES:
                    yield member.name, None
                    continue
                handle = archive.extractfile(member)
                yield member.name, handle.read() if handle is not None else None

    def _zip_members(self) -> Iterator[tuple[str, bytes | None]]:
        with zipfile.ZipFile(self.path) as archive:
            for info in archive.infolist():
                if info.is_dir() or Path(info.filename).name.startswith("."):
                    continue
                if info.file_size > MAX_CSR_BYTES:
                    yield info.filename, None
                    continue
                yield info.filename, archive.read(info)

    # -- public ---------------------------------------------------------------------------

    def items(self) -> Iterator[Item]:
        """Every CSR of the source, in a stable order."""
        if self.kind == "folder":
            cut = len(os.path.join(self.path, ""))  # every path starts with it: no relpath()
            for path in self._folder_files():
                yield Item(path[cut:], path=path)
        elif self.kind == "csv":
            yield from self._csv_rows()
        else:
            members = self._tar_members() if self.kind == "tar" else self._zip_members()
            for name, data in members:
                # An oversized member becomes an empty CSR: the worker reports it as unreadable.
                yield Item(name, data=data if data is not None else b"")

    def count(self) -> int:
        """How many items ``items()`` yields (one cheap pass over names only)."""
        if self.kind == "folder":
            return sum(1 for _ in self._folder_files())
        if self.kind == "csv":
            with open(self.path, newline="", encoding="utf-8") as handle:
                return max(0, sum(1 for _ in csv.reader(handle)) - 1)
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as archive:
                return sum(
                    1
                    for i in archive.infolist()
                    if not i.is_dir() and not Path(i.filename).name.startswith(".")
                )
        with tarfile.open(self.path, mode="r:*") as archive:
            return sum(1 for m in archive if m.isfile() and not Path(m.name).name.startswith("."))


def device_ids(id_format: str, count: int, start: int = 0) -> Iterator[Item]:
    """Items for ``bulk issue``: IDs ``id_format.format(n=start..start+count-1)``."""
    for n in range(start, start + count):
        certificate_id = id_format.format(n=n)
        yield Item(certificate_id, certificate_id=certificate_id)


def check_id_format(id_format: str, count: int, start: int = 0) -> None:
    """Refuse a format that fails or gives the same ID twice; raises InputError."""
    try:
        first, second = id_format.format(n=start), id_format.format(n=start + 1)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"bad --id-format {id_format!r} ({exc}); example: 'dev-{{n:06d}}'"
        ) from None
    if count > 1 and first == second:
        raise InputError(f"--id-format {id_format!r} gives the same ID for every device: use {{n}}")
