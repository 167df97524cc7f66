"""Writing outputs safely: a temporary file beside the target, then one rename.

A run that is killed, or fails, while writing its CSV, JSON, report or model
card must leave the previous file as it was, never a truncated one: every
end-of-run output goes through ``atomic_write`` (a file object) or
``atomic_path`` (a temporary path for libraries that write to a path:
``np.save``, ``savefig``, ``torch.save``). ``os.replace`` is atomic on POSIX
within one folder, so readers see the old file or the whole new one.

Text is written with ``errors="backslashreplace"``: a file name that is not
UTF-8 (Python keeps its bytes as surrogate escapes) comes out as ``\\udcff``
instead of a UnicodeEncodeError halfway through the file.

A target that cannot be written (read-only folder, a folder, a parent that is
a file) is an ``OutputError``: one line naming the path, shown without a
traceback by the CLI.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

TEXT_ERRORS = "backslashreplace"  # how characters that UTF-8 cannot hold (surrogate escapes) are written


class OutputError(Exception):
    """An output path that cannot be written; ``str(e)`` is one line naming it."""


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``): a message that quotes a file's
    own content (a column name, an ID with a stray quote before it) stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


class OneLineError(Exception):
    """An error whose message is always one line, whatever data it quotes."""

    def __init__(self, message: object = ""):
        super().__init__(one_line(str(message)))


def check_output(path: str | Path) -> Path:
    """``path`` as a Path whose parent folder exists (made if needed) and is writable; else ``OutputError``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{safe_name(path)}: is a folder; give a file name")
    parent = path.parent
    for p in (parent, *parent.parents):  # the nearest existing ancestor must be a folder
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"{safe_name(path)}: cannot write: {safe_name(p)} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{safe_name(path)}: cannot make its folder ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{safe_name(path)}: cannot write: folder {safe_name(parent)} is not writable")
    return path


def check_folder(path: str | Path) -> Path:
    """``path`` as an existing (made if needed), writable folder for outputs; else ``OutputError``."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == path else f"is inside {safe_name(p)}, which is a file"
                raise OutputError(f"{safe_name(path)}: {what}; give a folder for the outputs")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{safe_name(path)}: cannot make the folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{safe_name(path)}: folder is not writable")
    return path


def safe_name(path: str | Path) -> str:
    """A path as printable text, whatever bytes its name has (surrogate escapes become ``\\udcff``)."""
    return str(path).encode("utf-8", TEXT_ERRORS).decode("utf-8")


def _temp_for(path: Path) -> Path:
    # hidden, per process, same folder (rename stays atomic) and same suffix (np.save / savefig go by it)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` only if the block succeeds."""
    path = check_output(path)
    tmp = _temp_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{safe_name(path)}: cannot write ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", *, encoding: str = "utf-8", newline: str | None = None
                 ) -> Iterator[IO]:
    """Open a temporary file for ``path``; on success it is flushed to disk and renamed over ``path``.

    On any exception (or a kill) the old ``path`` stays as it was and the temporary file is removed.
    """
    with atomic_path(path) as tmp:
        text = "b" not in mode
        with open(tmp, mode, **({"encoding": encoding, "errors": TEXT_ERRORS, "newline": newline} if text else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> Path:
    """``text`` to ``path`` atomically (UTF-8, surrogate escapes written as ``\\udcXX``)."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def write_csv(frame, path: str | Path) -> Path:
    """A pandas DataFrame to ``path`` atomically, without its index."""
    with atomic_write(path, newline="") as f:
        frame.to_csv(f, index=False)
    return Path(path)
