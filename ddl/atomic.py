"""Every file ddl writes is whole or absent: written to a temporary file beside it, fsynced, then
renamed over the name (a rename within a directory is atomic). A reader, a crash or a full disk
never sees half a file; an error names the path and leaves what was there before."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from ddl.failpoints import failpoint


class WriteError(OSError):
    """A file could not be written (full disk, no permission); the message names it."""


def write_atomic(path, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(f) on a temporary file in path's directory, fsync it, rename it to path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # as an open() would make it: mkstemp's 0600 hides a
        with os.fdopen(fd, "wb") as f:     # model from the collaborators who share the folder
            write(f)
            f.flush()
            os.fsync(f.fileno())
            failpoint("write", name=path.name)     # tests only: a fault mid-write
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise WriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from None
        raise
    return path


def _umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_text_atomic(path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))
