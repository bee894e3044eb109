"""FilesIndex: an index whose items are files (or directories) found by glob patterns.

Ids are the files' base names (optionally without extension); ``get_fullpath(id)``
gives the absolute path. Everything else is :class:`~fpipe.index.DatasetIndex`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .index import DatasetIndex, _analyse, _restore_index
from .values import readonly

__all__ = ["FilesIndex"]


class FilesIndex(DatasetIndex):
    """An index of files (or directories) found by glob patterns; ids are their basenames.

    ``path`` is a glob or a list of globs (``**`` recurses). With ``no_ext=True`` ids drop
    the extension; with ``dirs=True`` only directories are indexed, else only files. Ids
    must be unique: two matches with the same id raise ``ValueError``. Order: with
    ``sort=True`` ids are sorted; otherwise globs keep the given order and each glob's
    matches are sorted by path (the OS lists them in no fixed order). A path matched by
    several globs is indexed once.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("b.txt", "a.txt"):
    ...     _ = (d / name).write_text("x")
    >>> idx = FilesIndex(str(d / "*.txt"), no_ext=True)
    >>> list(idx), idx.get_fullpath("a") == str(d / "a.txt")
    (['a', 'b'], True)
    """

    __slots__ = ("_paths",)

    _paths: np.ndarray

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        no_ext: bool = False,
        dirs: bool = False,
        sort: bool = False,
    ) -> None:
        if isinstance(path, (str, os.PathLike)):
            globs = [os.fspath(path)]
        elif isinstance(path, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in path):
            globs = [os.fspath(p) for p in path]
        else:
            raise TypeError(f"path must be a glob or a list of globs, not {path!r}")
        if not globs:
            raise ValueError("path is an empty list; give at least one glob")
        found: dict[str, str] = {}  # id -> full path
        skipped = 0
        for pattern in globs:
            for match in sorted(glob.glob(pattern, recursive=True)):
                if not (os.path.isdir(match) if dirs else os.path.isfile(match)):
                    skipped += 1
                    continue
                full = os.path.abspath(match)
                name = os.path.basename(full)
                item_id = os.path.splitext(name)[0] if no_ext else name
                prev = found.setdefault(item_id, full)
                if prev != full:
                    raise ValueError(
                        f"two {'directories' if dirs else 'files'} have the same id "
                        f"{item_id!r}: {prev!r} and {full!r}; ids (basenames"
                        f"{' without extension' if no_ext else ''}) must be unique. Narrow the "
                        "globs, or index the folders separately."
                    )
        if not found:
            what = "directories" if dirs else "files"
            hint = ""
            if skipped:
                other = "files" if dirs else "directories"
                hint = f" ({skipped} {other} matched; pass dirs={not dirs} to index them)"
            raise ValueError(f"no {what} match {globs}{hint}")
        ids = np.array(list(found), dtype=str)
        paths = np.array(list(found.values()), dtype=str)
        if sort:
            order = np.argsort(ids, kind="stable")
            ids, paths = ids[order], paths[order]
        self._set_files(readonly(ids), readonly(paths))

    def _set_files(self, ids: np.ndarray, paths: np.ndarray) -> None:
        self._set(ids, *_analyse(ids, check_unique=False))
        object.__setattr__(self, "_paths", paths)

    @classmethod
    def _from_arrays(cls, ids: np.ndarray, paths: np.ndarray) -> FilesIndex:
        """Build from read-only, aligned arrays of unique ids and their full paths."""
        obj = object.__new__(cls)
        obj._set_files(ids, paths)
        return obj

    def _take(self, positions: np.ndarray | slice) -> FilesIndex:
        ids, paths = self._ids[positions], self._paths[positions]
        if isinstance(positions, np.ndarray):
            readonly(ids)
            readonly(paths)
        return self._from_arrays(ids, paths)

    @property
    def fullpaths(self) -> np.ndarray:
        """The full paths, aligned with ``indices`` (read-only)."""
        return self._paths

    def get_fullpath(self, id: Any) -> Any:
        """The full path of one id (a ``str``), or a list of paths for several ids."""
        pos = self.get_pos(id)
        if isinstance(pos, int):
            return str(self._paths[pos])
        return self._paths[pos].tolist()

    def __eq__(self, other: object) -> bool:
        eq = super().__eq__(other)
        if eq is not True:
            return eq
        assert isinstance(other, FilesIndex)
        return self._paths is other._paths or bool(np.array_equal(self._paths, other._paths))

    def _hash_parts(self) -> tuple[Any, ...]:
        return (*super()._hash_parts(), tuple(self._paths.tolist()))

    __hash__ = DatasetIndex.__hash__

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_index, (type(self), np.asarray(self._ids), np.asarray(self._paths)))
