"""Files and folders a command writes at the end of long work: refused at the start if the command could not write
them. Nothing is created or touched by the checks."""

import os
from pathlib import Path


def check_writable(path: str, option: str, *, makes_folders: bool = False) -> None:
    """Refuse the file `path` if the command could not write it.

    With `makes_folders` the command creates missing folders on the way, so only the nearest existing one must take
    a new entry.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{option} {path}: is a folder; name a file")
    folder = _nearest_existing(target.parent) if makes_folders else target.parent
    if not folder.exists():
        raise ValueError(f"{option} {path}: there is no folder {folder}")
    _check_folder(folder, target, path, option)


def check_writable_folder(path: str, option: str) -> None:
    """Refuse the folder `path` if the command could not make it (with its parents) or write into it."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {path}: is a file; name a folder")
    _check_folder(_nearest_existing(folder), folder, path, option)


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_folder(folder: Path, target: Path, path: str, option: str) -> None:
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise ValueError(f"{option} {path}: not allowed to write there")
