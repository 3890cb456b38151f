"""The download ZIP of a set of studies: IHE PDI media, laid out in advance, read on demand.

:func:`archive_for` gathers the instances, makes sure each has its CRC-32
(:class:`~sharing.models.MemberChecksum`, computed once by streaming the blob), reads each
instance's header (not its pixels) to build the DICOMDIR (:mod:`sharing.pdi`), renders
README.TXT and INDEX.HTM, and returns a :class:`~sharing.zipstream.Archive` whose members
read the original blobs, from any offset, in chunks.

The plan (names, sizes, CRCs, blob keys and the small generated members) is cached under a
key derived from the content, so resumed and parallel Range requests do not re-read the
headers; it is deterministic, so every process computes the same bytes and the same ETag.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError
from django.template.loader import render_to_string
from django.utils import translation
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, generate_uid

from dicomweb.frames import part10_header
from imaging import blobs
from imaging.models import Instance, Study

from . import pdi
from .models import MemberChecksum
from .zipstream import Archive, Member

log = logging.getLogger(__name__)

PLAN_CACHE_SECONDS = 3600
README = "README.TXT"
INDEX = "INDEX.HTM"
DICOMDIR = "DICOMDIR"


def instances_of(studies: Sequence[Study]) -> list[Instance]:
    """The studies' instances in the order of the media: study, series, instance number."""
    return list(
        Instance.objects.filter(series__study__in=[s.pk for s in studies])
        .select_related("series", "series__study")
        .defer("metadata")
        .order_by("series__study__study_date", "series__study__pk", "series__series_number",
                  "series__pk", "instance_number", "pk")
    )


def _prefix(instance: Instance) -> bytes:
    """A preamble and File Meta for objects stored bare (as DIMSE sent them), else nothing."""
    if instance.has_file_meta:
        return b""
    return part10_header(instance.sop_class_uid, instance.sop_instance_uid,
                         instance.transfer_syntax_uid)


def _read_from(key: str, prefix: bytes, offset: int) -> Iterator[bytes]:
    """The member's bytes (``prefix`` then the blob) from ``offset``, in chunks."""
    if offset < len(prefix):
        yield prefix[offset:]
        offset = 0
    else:
        offset -= len(prefix)
    with blobs.open_blob(key) as fp:
        if offset:
            fp.seek(offset)
        while chunk := fp.read(blobs.CHUNK_SIZE):
            yield chunk


def ensure_checksums(instances: Sequence[Instance]) -> dict[int, MemberChecksum]:
    """Each instance's member CRC-32, computing (streaming) the ones not known yet."""
    known = {
        c.instance_id: c
        for c in MemberChecksum.objects.filter(instance_id__in=[i.pk for i in instances])
    }
    for instance in instances:
        current = known.get(instance.pk)
        if current is not None and current.sha256 == instance.sha256:
            continue
        prefix = _prefix(instance)
        crc, size = 0, 0
        for chunk in _read_from(instance.blob_key, prefix, 0):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
        if size != instance.size_bytes + len(prefix):
            raise ValueError(f"stored object {instance.sop_instance_uid} has {size} bytes, "
                             f"the index says {instance.size_bytes}; run the fixity check")
        try:
            checksum, _ = MemberChecksum.objects.update_or_create(
                instance_id=instance.pk,
                defaults={"sha256": instance.sha256, "size": size, "crc32": crc},
            )
        except IntegrityError:  # another download computed it at the same moment
            checksum = MemberChecksum.objects.get(instance_id=instance.pk)
        known[instance.pk] = checksum
    return known


@dataclass(frozen=True)
class _PlannedMember:
    name: str
    size: int
    crc32: int
    blob_key: str = ""
    prefix: bytes = b""
    data: bytes | None = None


@dataclass(frozen=True)
class Plan:
    members: tuple[_PlannedMember, ...]
    modified: datetime.datetime
    etag: str
    instance_count: int


def _header(instance: Instance) -> Dataset:
    with blobs.open_blob(instance.blob_key) as fp:
        ds = dcmread(fp, stop_before_pixels=True, force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = UID(instance.transfer_syntax_uid)
        ds.file_meta = meta
    meta.MediaStorageSOPClassUID = UID(instance.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(instance.sop_instance_uid)
    return ds


def _plan(instances: list[Instance], *, seed: str, language: str,
          modified: datetime.datetime, etag: str) -> Plan:
    checksums = ensure_checksums(instances)
    media = pdi.build_media((_header(i) for i in instances),
                            fileset_uid=generate_uid(entropy_srcs=[seed]))
    with translation.override(language or settings.LANGUAGE_CODE):
        context = {"patients": media.patients, "modified": modified,
                   "instance_count": len(instances), "unindexed": len(media.unindexed)}
        readme = render_to_string("sharing/pdi_readme.txt", context).encode("utf-8")
        index = render_to_string("sharing/pdi_index.htm", context).encode("utf-8")
    members = [
        _PlannedMember(README, len(readme), _crc(readme), data=readme),
        _PlannedMember(INDEX, len(index), _crc(index), data=index),
        _PlannedMember(DICOMDIR, len(media.dicomdir), _crc(media.dicomdir),
                       data=media.dicomdir),
    ]
    other = 0
    for instance in instances:
        name = media.file_ids.get(instance.sop_instance_uid)
        if name is None:  # a SOP class a DICOMDIR has no record type for: still on the media
            name = f"OTHER/OT{other:06d}"
            other += 1
        checksum = checksums[instance.pk]
        members.append(_PlannedMember(name, checksum.size, checksum.crc32,
                                      blob_key=instance.blob_key, prefix=_prefix(instance)))
    return Plan(tuple(members), modified, etag, len(instances))


def _crc(data: bytes) -> int:
    return zlib.crc32(data)


def plan_for(studies: Sequence[Study], *, seed: str, language: str,
             modified: datetime.datetime) -> Plan:
    """The (cached) layout of the ZIP of ``studies``; ``seed`` names the link it is for."""
    instances = instances_of(studies)
    fingerprint = hashlib.sha256()
    fingerprint.update(f"{seed}|{language}|{modified.isoformat()}|v1".encode())
    for instance in instances:
        fingerprint.update(f"|{instance.pk}:{instance.sha256}".encode())
    digest = fingerprint.hexdigest()
    key = f"sharing:plan:{digest}"
    plan = cache.get(key)
    if isinstance(plan, Plan):
        return plan
    plan = _plan(instances, seed=seed, language=language, modified=modified,
                 etag=f'"{digest[:40]}"')
    cache.set(key, plan, PLAN_CACHE_SECONDS)
    return plan


def archive(plan: Plan) -> Archive:
    members = []
    for m in plan.members:
        source = m.data if m.data is not None else partial(_read_from, m.blob_key, m.prefix)
        members.append(Member(m.name, m.size, m.crc32, source))
    return Archive(members, plan.modified)
