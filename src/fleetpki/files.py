"""Safe file output: atomic, never clobbering by accident, private files 0600."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from fleetpki.errors import ConflictError, FleetPKIError


def check_writable(path: Path, *, force: bool = False) -> None:
    """Raise before any work if ``path`` exists (and not ``force``) or its folder is missing."""
    if path.exists() and not force:
        raise ConflictError(f"{path} already exists (use --force to overwrite)")
    if not path.parent.is_dir():
        raise FleetPKIError(f"folder {path.parent} does not exist")


def write_file(path: Path, data: bytes, *, private: bool = False, force: bool = False) -> None:
    """Write ``data`` to ``path`` all at once: a temporary file, fsync, then link/rename.

    A failure (full disk, permissions) leaves no partial file behind. ``private`` files are
    created 0600 from the first byte. Raises ConflictError if the file exists and not ``force``.
    """
    path = Path(path)
    mode = 0o600 if private else 0o644
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError:
        raise FleetPKIError(f"folder {path.parent} does not exist") from None
    except OSError as exc:
        raise FleetPKIError(f"cannot write in {path.parent}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the path appeared meanwhile
            except FileExistsError:
                raise ConflictError(f"{path} already exists (use --force to overwrite)") from None
            os.unlink(tmp)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
        raise FleetPKIError(f"cannot write {path}: {reason}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_file(path: Path, *, limit: int = 1 << 20) -> bytes:
    """Read a small input file with a one-line error for the usual failures."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise FleetPKIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FleetPKIError(f"{path} is a folder, not a file") from None
    except OSError as exc:
        raise FleetPKIError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise FleetPKIError(f"{path} is too large (more than {limit} bytes)")
    return data
