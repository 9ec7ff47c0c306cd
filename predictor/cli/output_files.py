"""Files a command writes at the end of long work: refused at the start if the command could not write them."""

import os
from pathlib import Path


def check_writable(path: str, option: str, *, makes_folders: bool = False) -> None:
    """Refuse `path` if the command could not write it; the file itself is not touched.

    With `makes_folders` the command creates missing folders on the way, so only the nearest existing one must take
    a new entry.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{option} {path}: is a folder; name a file")
    folder = target.parent
    if makes_folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.exists():
        raise ValueError(f"{option} {path}: there is no folder {folder}")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise ValueError(f"{option} {path}: not allowed to write there")
