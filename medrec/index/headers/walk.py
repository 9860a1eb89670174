"""List the files of a scan folder: any nesting, any names, operating-system clutter left out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# Files the operating system drops into folders; they are skipped without a qc row.
OS_JUNK_NAMES: frozenset[str] = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "ehthumbs.db", ".directory"})
OS_JUNK_DIRS: frozenset[str] = frozenset({"__MACOSX", ".Spotlight-V100", ".Trashes", ".fseventsd"})
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


def is_os_junk(name: str) -> bool:
    """True for files that operating systems scatter into folders (.DS_Store, AppleDouble ``._x``)."""
    return name in OS_JUNK_NAMES or name.startswith("._")


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in .nii or .nii.gz (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def walk_files(root: Path, skip: Sequence[Path] = ()) -> tuple[list[str], int]:
    """All files below ``root`` in sorted order (any nesting, any names).

    Args:
        root: the scan folder (or a single file).
        skip: files or folders to leave out (the output folder, the labels file).

    Returns:
        (absolute file paths, number of OS junk files skipped).
    """
    if root.is_file():
        return [str(root.resolve())], 0
    skip_resolved = {str(p.resolve()) for p in skip}
    files: list[str] = []
    junk = 0
    for folder, dirnames, filenames in os.walk(root):
        kept_dirs = []
        for name in sorted(dirnames):
            full = str((Path(folder) / name).resolve())
            if name in OS_JUNK_DIRS:
                junk += sum(len(f) for _, _, f in os.walk(Path(folder) / name))
            elif full not in skip_resolved:
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        # resolve the folder once and only the files that are links (a realpath per file is
        # a dozen lstat calls; archives hold tens of thousands of files)
        absolute_folder = str(Path(folder).absolute())
        resolved_folder = os.path.realpath(folder)
        for name in sorted(filenames):
            if is_os_junk(name):
                junk += 1
                continue
            full_path = os.path.join(absolute_folder, name)
            if skip_resolved:
                is_link = os.path.islink(full_path)
                resolved = os.path.realpath(full_path) if is_link else os.path.join(resolved_folder, name)
                if resolved in skip_resolved:
                    continue
            files.append(full_path)
    return files, junk
