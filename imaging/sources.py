"""Where objects to ingest come from: files, folders, ZIP archives and DICOMDIR media.

Each source yields :class:`Candidate` items that open as seekable binary files, so the
import command and the browser upload feed :func:`imaging.ingest.ingest` the same way.

What a source may bring in is bounded (README, "Limits on what a request may ask for"):
an object larger than ``INGEST_MAX_OBJECT_BYTES``, ZIP members past the point where the
archive has expanded ``ZIP_MAX_EXPANSION_RATIO`` times its own size, and DICOMDIR
references that lead outside the media's folder are refused with a reason, before
anything is stored. Sizes are counted while a member is unpacked, not taken on trust from
the archive's directory.
"""

from __future__ import annotations

import functools
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings
from django.utils.translation import gettext as _
from pydicom import dcmread

# ZIP members up to this size are unpacked in memory; larger ones spill to a temporary file.
SPOOL_MAX = 16 * 1024 * 1024
SPOOL_CHUNK = 1024 * 1024


class Refused(Exception):
    """An object a source will not hand to ingest; the message says why (shown to users)."""


def too_large() -> str:
    """Why an object over ``INGEST_MAX_OBJECT_BYTES`` is refused (for every entry point)."""
    return _("the object is larger than the limit of %(limit)s bytes "
             "(INGEST_MAX_OBJECT_BYTES)") % {"limit": settings.INGEST_MAX_OBJECT_BYTES}


def _expands_too_much() -> str:
    return _("the ZIP archive expands to more than %(ratio)s times its size "
             "(ZIP_MAX_EXPANSION_RATIO): this member and the ones after it were not "
             "unpacked") % {"ratio": settings.ZIP_MAX_EXPANSION_RATIO}


@dataclass(frozen=True)
class Candidate:
    """A file, or a member of a ZIP file; plain data, so worker processes can take it.

    ``refusal`` is set when the source already knows the object must not be ingested
    (too large, beyond the archive's expansion budget, outside the media folder):
    :meth:`open` then raises :class:`Refused` with it.
    """

    path: str
    member: str = ""
    size: int = 0
    refusal: str = ""

    @property
    def name(self) -> str:
        return f"{self.path}!{self.member}" if self.member else self.path

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        if self.refusal:
            raise Refused(self.refusal)
        if not self.member:
            with open(self.path, "rb") as fp:
                yield fp
            return
        with (_zipfile(self.path).open(self.member) as src,
              _spool(src, settings.INGEST_MAX_OBJECT_BYTES) as fp):
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
    refusal = too_large() if size > settings.INGEST_MAX_OBJECT_BYTES else ""
    return Candidate(str(path), size=size, refusal=refusal)


def from_dicomdir(path: Path) -> Iterator[Candidate]:
    """The files a DICOMDIR references, resolved against the media's root folder.

    The directory records are read directly rather than through pydicom's ``FileSet``,
    which quietly drops records whose file is missing and refuses a whole DICOMDIR for one
    malformed record: a missing file should be reported, and the rest imported.

    A reference that leads outside the media's folder (``..``, an absolute path, a link
    pointing elsewhere) is refused, never followed: a DICOMDIR is data from outside.
    """
    ds = dcmread(path)
    root = path.parent
    inside = root.resolve()
    seen: set[Path] = set()
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else [str(p) for p in file_id]
        referenced = root.joinpath(*(p.strip() for p in parts))
        if referenced in seen:
            continue
        seen.add(referenced)
        if not referenced.resolve().is_relative_to(inside):
            yield Candidate(str(referenced), refusal=_(
                "the DICOMDIR refers to %(file_id)s, outside the media folder; not read")
                % {"file_id": "\\".join(parts)})
        else:
            yield _file(referenced)


def from_zip(path: Path) -> Iterator[Candidate]:
    budget = _ExpansionBudget(path.stat().st_size)
    for info in _zipfile(str(path)).infolist():
        if not _skipped_member(info):
            yield Candidate(str(path), info.filename, info.file_size,
                            refusal=budget.refusal(info))


class _ExpansionBudget:
    """How much an archive may still expand to: ``ZIP_MAX_EXPANSION_RATIO`` times its size.

    Members are charged their declared size in order; :mod:`zipfile` never gives more than
    the declared size of a member (a member that lies fails its CRC check), and
    :func:`_spool` counts what it unpacks besides. Once the budget is spent every later
    member is refused too, so a zip bomb costs a look at its directory and nothing more.
    """

    def __init__(self, archive_size: int) -> None:
        self.left = settings.ZIP_MAX_EXPANSION_RATIO * max(archive_size, 1)
        self.spent = False

    def refusal(self, info: zipfile.ZipInfo) -> str:
        if info.file_size > settings.INGEST_MAX_OBJECT_BYTES:
            return too_large()
        if self.spent or info.file_size > self.left:
            self.spent = True
            return _expands_too_much()
        self.left -= info.file_size
        return ""


@dataclass(frozen=True)
class Member:
    """A member of an uploaded ZIP: ``file`` to ingest, or the reason it was refused."""

    name: str
    file: IO[bytes] | None
    refusal: str = ""


def _skipped_member(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    return info.is_dir() or is_dicomdir(name) or os.path.basename(name).startswith(".")


@contextmanager
def open_zip_members(fp: IO[bytes]) -> Iterator[Iterator[Member]]:
    """The members of an already open ZIP (a browser upload), each as a seekable file or
    with the reason it is refused (the same limits as :func:`from_zip`)."""
    archive_size = fp.seek(0, os.SEEK_END)
    fp.seek(0)
    with zipfile.ZipFile(fp) as archive:

        def members() -> Iterator[Member]:
            budget = _ExpansionBudget(archive_size)
            for info in archive.infolist():
                if _skipped_member(info):
                    continue
                refusal = budget.refusal(info)
                if refusal:
                    yield Member(info.filename, None, refusal)
                    continue
                try:
                    with (archive.open(info) as src,
                          _spool(src, settings.INGEST_MAX_OBJECT_BYTES) as spooled):
                        yield Member(info.filename, spooled)
                except Refused as exc:
                    yield Member(info.filename, None, str(exc))

        yield members()


@contextmanager
def _spool(src: IO[bytes], limit: int) -> Iterator[IO[bytes]]:
    """A seekable copy of a stream: in memory when small, on disk when large.

    Raises :class:`Refused` as soon as more than ``limit`` bytes come out: what a member
    unpacks to is counted, whatever its archive declares.
    """
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX) as spooled:
        copied = 0
        while chunk := src.read(SPOOL_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise Refused(too_large())
            spooled.write(chunk)
        spooled.seek(0)
        yield spooled
