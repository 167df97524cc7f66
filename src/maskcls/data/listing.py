"""Listing a folder of photos without dropping anything silently.

``predict --source DIR`` promises a row for every file it cannot read. A
recursive glob that keeps only ``is_file()`` paths loses dangling links and
symlink loops without a word, and skips folders it cannot list. Here every
path that looks like a photo becomes a row (its decode then says why it has
no answer), and everything else that is not read (folders that cannot be
listed, links to folders, files that are not photos) is one WARNING per kind,
with a count and an example.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..io import safe_name
from ..labels import IMAGE_SUFFIXES

log = logging.getLogger("maskcls")


def list_images(folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Every path under ``folder`` (recursively, sorted) whose name ends in an image suffix, readable or not.

    Links to folders are not followed (as before: no loops, no double counting); they, unlistable folders and
    files of other kinds are counted in WARNINGs.
    """
    folder = Path(folder)
    unlistable: list[str] = []
    linked: list[str] = []
    other: list[str] = []
    paths: list[Path] = []

    def cannot_list(e: OSError) -> None:
        unlistable.append(f"{safe_name(e.filename)} ({e.strerror})")

    for top, dirs, files in os.walk(folder, onerror=cannot_list, followlinks=False):
        linked += [os.path.join(top, d) for d in dirs if os.path.islink(os.path.join(top, d))]
        for name in files:  # dangling links and symlink loops land here too: they get rows
            p = Path(top) / name
            (paths if p.suffix.lower() in suffixes else other).append(p)
    for what, items in (("folder(s) could not be listed; their photos get no row", unlistable),
                        ("link(s) to folders were not followed", linked),
                        (f"file(s) are not photos ({', '.join(suffixes)}) and were skipped", other)):
        if items:
            log.warning("%s: %d %s, e.g. %s", safe_name(folder), len(items), what, safe_name(items[0]))
    return sorted(paths)
