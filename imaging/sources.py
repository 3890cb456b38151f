"""Where objects to ingest come from: files, folders, ZIP archives and DICOMDIR media.

Each source yields :class:`Candidate` items that open as seekable binary files, so the
import command and the browser upload feed :func:`imaging.ingest.ingest` the same way.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydicom import dcmread

# ZIP members up to this size are unpacked in memory; larger ones spill to a temporary file.
SPOOL_MAX = 16 * 1024 * 1024


@dataclass(frozen=True)
class Candidate:
    """A file, or a member of a ZIP file; plain data, so worker processes can take it."""

    path: str
    member: str = ""
    size: int = 0

    @property
    def name(self) -> str:
        return f"{self.path}!{self.member}" if self.member else self.path

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        if not self.member:
            with open(self.path, "rb") as fp:
                yield fp
            return
        with _zipfile(self.path).open(self.member) as src, _spool(src) as fp:
            yield fp


@functools.lru_cache(maxsize=4)
def _zipfile(path: str) -> zipfile.ZipFile:
    # One open archive per process, so a ZIP of thousands of files is indexed once.
    return zipfile.ZipFile(path)


def forget_open_archives() -> None:
    """Drop the archives this process has open; a forked worker calls it first.

    A forked process shares its parent's file offsets: two workers reading through the
    inherited handle of one ZIP would move each other's position and read garbage.
    """
    _zipfile.cache_clear()


def is_dicomdir(name: str) -> bool:
    return os.path.basename(name.rstrip("/")).upper() == "DICOMDIR"


def expand(paths: list[Path]) -> Iterator[Candidate]:
    """Every candidate object under ``paths``: folders recursively, ZIPs, DICOMDIRs.

    A DICOMDIR names the media's files; inside a folder walk it is skipped, since the walk
    finds the same files.
    """
    for path in paths:
        if path.is_dir():
            yield from _walk(path)
        elif is_dicomdir(path.name):
            yield from from_dicomdir(path)
        elif zipfile.is_zipfile(path):
            yield from from_zip(path)
        elif path.is_file():
            yield _file(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")


def _walk(root: Path) -> Iterator[Candidate]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if is_dicomdir(filename) or filename.startswith("."):
                continue
            if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
                yield from from_zip(path)
            else:
                yield _file(path)


def _file(path: Path) -> Candidate:
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # reported as unreadable when it is opened, with the reason
    return Candidate(str(path), size=size)


def from_dicomdir(path: Path) -> Iterator[Candidate]:
    """The files a DICOMDIR references, resolved against the media's root folder.

    The directory records are read directly rather than through pydicom's ``FileSet``,
    which quietly drops records whose file is missing and refuses a whole DICOMDIR for one
    malformed record: a missing file should be reported, and the rest imported.
    """
    ds = dcmread(path)
    root = path.parent
    seen: set[Path] = set()
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else [str(p) for p in file_id]
        referenced = root.joinpath(*(p.strip() for p in parts))
        if referenced not in seen:
            seen.add(referenced)
            yield _file(referenced)


def from_zip(path: Path) -> Iterator[Candidate]:
    for info in _zipfile(str(path)).infolist():
        if not _skipped_member(info):
            yield Candidate(str(path), info.filename, info.file_size)


def _skipped_member(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    return info.is_dir() or is_dicomdir(name) or os.path.basename(name).startswith(".")


@contextmanager
def open_zip_members(fp: IO[bytes]) -> Iterator[Iterator[tuple[str, IO[bytes]]]]:
    """The members of an already open ZIP (a browser upload), each as a seekable file."""
    with zipfile.ZipFile(fp) as archive:

        def members() -> Iterator[tuple[str, IO[bytes]]]:
            for info in archive.infolist():
                if _skipped_member(info):
                    continue
                with archive.open(info) as src, _spool(src) as spooled:
                    yield info.filename, spooled

        yield members()


@contextmanager
def _spool(src: IO[bytes]) -> Iterator[IO[bytes]]:
    """A seekable copy of a stream: in memory when small, on disk when large."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX) as spooled:
        shutil.copyfileobj(src, spooled, 1024 * 1024)
        spooled.seek(0)
        yield spooled
