"""Small file helpers shared by every writer: atomic writes, never overwriting inputs."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator, TextIO

from lesionprop.errors import InputError, LesionpropError, MissingInputError


class OutputWriteError(LesionpropError, OSError, ValueError):
    """Writing an output failed (full disk, read-only folder, ...): one line naming the file; the
    previous file, if any, is unchanged.  An OSError (same errno) and a LesionpropError (the CLI's
    one line, exit code 2)."""


class PathKindError(InputError):
    """A folder where a file is expected, or a file where a folder is: one line naming the option
    (when a command checks its arguments) and the path.  An InputError: the CLI's one line, exit code 2."""


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def _write_error(path: Path, exc: OSError) -> OutputWriteError:
    what = "the previous file is unchanged" if path.exists() else "nothing was written"
    return OutputWriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc} ({what})")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", newline: str | None = "") -> Iterator[TextIO]:
    """Write ``path`` through a temp file in the same folder, renamed on success.

    A crash or exception leaves any previous ``path`` untouched and no partial file.
    The finished file gets the permissions a plain ``open()`` would give (0666 less the umask).
    A full disk or a read-only folder raises :class:`OutputWriteError` naming ``path``; a folder
    at ``path`` (or a file where one of its folders should be) raises :class:`PathKindError`.
    """
    path = Path(path)
    _refuse_folder_in_the_way(path)
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
        try:
            os.replace(tmp, path)
        except IsADirectoryError:             # a folder of that name appeared while writing
            raise PathKindError(f"cannot write {path}: it is a folder, not a file (nothing was written)") from None
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


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing path at or above ``folder`` when it is not a folder (it blocks mkdir)."""
    for p in (folder, *folder.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def _refuse_folder_in_the_way(path: Path) -> None:
    """atomic_write's own check: ``path`` must not be a folder, and its folder must be creatable."""
    if path.is_dir():
        raise PathKindError(f"cannot write {path}: it is a folder, not a file (nothing was written)")
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise PathKindError(f"cannot write {path}: {blocker} is a file, not a folder (nothing was written)")


def refuse_overwrite_of_inputs(out: str | os.PathLike, *inputs: str | os.PathLike | None,
                               option: str = "--out") -> None:
    """Raise InputError when ``out`` (given as ``option``) names the same file as one of ``inputs``."""
    out_p = Path(out).resolve()
    for inp in inputs:
        if inp is None:
            continue
        if Path(inp).resolve() == out_p:
            raise InputError(f"refusing to overwrite input file {inp}: choose another {option}")


def check_output_file(out: str | os.PathLike, *inputs: str | os.PathLike | None, option: str = "--out") -> None:
    """Before any work: ``out`` (the value of ``option``) must be writable as a file.

    Raises :class:`PathKindError` when it is an existing folder or when a file stands where one of
    its folders would be created, and InputError when it names one of ``inputs``.
    """
    p = Path(out)
    if p.is_dir():
        raise PathKindError(f"{option} {out} is a folder; give a file name")
    blocker = _file_in_the_way(p.parent)
    if blocker is not None:
        raise PathKindError(f"{option} {out}: {blocker} is a file, not a folder")
    refuse_overwrite_of_inputs(out, *inputs, option=option)


def check_output_folder(out: str | os.PathLike, option: str = "--out") -> None:
    """Before any work: ``out`` (the value of ``option``) must be a folder or creatable as one."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise PathKindError(f"{option} {out} is a file, expected a folder")
    blocker = _file_in_the_way(p.parent)
    if blocker is not None:
        raise PathKindError(f"{option} {out}: {blocker} is a file, not a folder")


def check_distinct_outputs(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse two output options (``{"--out": path, ...}``; None = not given) naming the same file."""
    seen: dict[Path, str] = {}
    for option, value in outputs.items():
        if value is None:
            continue
        key = Path(value).resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {option} both name {value}: give two different files")
        seen[key] = option


def require_file(path: str | os.PathLike, what: str) -> Path:
    """An input file that must exist: FileNotFoundError "``what`` not found: PATH", or
    :class:`PathKindError` when PATH is a folder."""
    p = Path(path)
    if p.is_dir():
        raise PathKindError(f"{what} {p} is a folder, expected a file")
    if not p.is_file():
        raise MissingInputError(f"{what} not found: {p}")
    return p


def require_folder(path: str | os.PathLike, what: str) -> Path:
    """An input folder that must exist: FileNotFoundError "``what`` not found: PATH", or
    :class:`PathKindError` when PATH is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise PathKindError(f"{what} {p} is a file, expected a folder")
    if not p.is_dir():
        raise MissingInputError(f"{what} not found: {p}")
    return p


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """Write a matplotlib figure atomically; the format follows the file suffix (default png)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig_kwargs)


class LockHeldError(LesionpropError, RuntimeError, ValueError):
    """Another process holds the lock of an output or run folder (the message names it: pid, host)."""


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, timeout_s: float = 0.0, busy: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if needed) while the block runs.

    The holder writes ``pid host`` into the file; a second process waits up to ``timeout_s``
    and then raises :class:`LockHeldError` naming that holder.  The kernel releases the
    lock when its holder dies (SIGKILL included), so a stale file never blocks a rerun.
    """
    import fcntl        # POSIX only: the rest of the module imports on any system

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
