"""Small file helpers shared by every writer: atomic writes, never overwriting inputs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, TextIO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", newline: str | None = "") -> Iterator[TextIO]:
    """Write ``path`` through a temp file in the same folder, renamed on success.

    A crash or exception leaves any previous ``path`` untouched and no partial file.
    The finished file gets the permissions a plain ``open()`` would give (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())   # mkstemp makes 0600; give what open() would give
        kwargs = {} if "b" in mode else {"newline": newline, "encoding": "utf-8"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
