"""Inter-process locks on an output folder: one writer per subject, one per table.

Two ``lesionq run`` processes (or dask workers on several machines sharing the
output folder) may work on one output folder at once. Each subject is processed
under an exclusive, non-blocking lock file ``OUT/.lesionq-locks/sub-<s>.lock``:
a process that finds the lock taken skips the subject (the holder is computing
it) and records ``skipped_locked``. The top-level tables are rewritten under a
blocking lock ``tables.lock``.

The locks are advisory ``flock``/``fcntl`` locks (:mod:`filelock`): the kernel
drops them when the holding process dies, so a killed run never leaves a stale
lock behind. On network file systems ``flock`` semantics depend on the mount
(NFSv4 and Lustre honour them; see the README's cluster notes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["LOCK_DIR", "SubjectBusy", "subject_lock", "tables_lock"]

#: Folder of the lock files, inside the output folder.
LOCK_DIR = ".lesionq-locks"


class SubjectBusy(Exception):
    """Another process holds the subject's lock."""


def _lock_path(out_dir: str | os.PathLike[str], name: str) -> Path:
    folder = Path(out_dir) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.lock"


@contextmanager
def subject_lock(out_dir: str | os.PathLike[str], subject: str) -> Iterator[None]:
    """Hold the subject's exclusive lock, or raise :class:`SubjectBusy` at once.

    Parameters
    ----------
    out_dir : path-like
        Output folder.
    subject : str
        Subject label without ``sub-``.
    """
    lock = FileLock(str(_lock_path(out_dir, f"sub-{subject}")), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SubjectBusy(f"sub-{subject} is being processed by another lesionq run") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def tables_lock(out_dir: str | os.PathLike[str], *, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the lock that serialises rewrites of the top-level tables (waits up to ``timeout_s``)."""
    lock = FileLock(str(_lock_path(out_dir, "tables")), thread_local=False)
    with lock.acquire(timeout=timeout_s):
        yield
