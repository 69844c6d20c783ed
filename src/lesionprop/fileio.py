"""Small file helpers shared by every writer: atomic writes, never overwriting inputs."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator, TextIO


class OutputWriteError(OSError, ValueError):
    """Writing an output failed (full disk, read-only folder, ...): one line naming the file; the
    previous file, if any, is unchanged.  An OSError (same errno) and a ValueError (the CLI's
    exit code 2)."""


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def _write_error(path: Path, exc: OSError) -> OutputWriteError:
    what = "the previous file is unchanged" if path.exists() else "nothing was written"
    return OutputWriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc} ({what})")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", newline: str | None = "") -> Iterator[TextIO]:
    """Write ``path`` through a temp file in the same folder, renamed on success.

    A crash or exception leaves any previous ``path`` untouched and no partial file.
    The finished file gets the permissions a plain ``open()`` would give (0666 less the umask).
    A full disk or a read-only folder raises :class:`OutputWriteError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise _write_error(path, exc) from None
        raise
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())   # mkstemp makes 0600; give what open() would give
        kwargs = {} if "b" in mode else {"newline": newline, "encoding": "utf-8"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(path, exc) from None
        raise


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_overwrite_of_inputs(out: str | os.PathLike, *inputs: str | os.PathLike | None) -> None:
    """Raise ValueError when ``out`` names the same file as one of ``inputs``."""
    out_p = Path(out).resolve()
    for inp in inputs:
        if inp is None:
            continue
        if Path(inp).resolve() == out_p:
            raise ValueError(f"refusing to overwrite input file {inp}: choose another --out")


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """Write a matplotlib figure atomically; the format follows the file suffix (default png)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig_kwargs)


class LockHeldError(RuntimeError, ValueError):
    """Another process holds the lock of an output or run folder (the message names it: pid, host)."""


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, timeout_s: float = 0.0, busy: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if needed) while the block runs.

    The holder writes ``pid host`` into the file; a second process waits up to ``timeout_s``
    and then raises :class:`LockHeldError` naming that holder.  The kernel releases the
    lock when its holder dies (SIGKILL included), so a stale file never blocks a rerun.
    """
    import fcntl
    import socket
    import time

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666 & ~_current_umask())
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
                    who = f"pid {holder[0]} on host {holder[1]}" if len(holder) >= 2 else "another process"
                    raise LockHeldError(f"{busy or f'{lock_file.parent} is in use'}: held by {who} "
                                        f"(lock {lock_file})") from None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
