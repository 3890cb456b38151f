"""Which earlier studies of a patient a doctor should compare the current one with.

Plain Python, no ORM: the timeline page marks the priors of a study with it, and recalling
priors to local storage (issue #12) ranks the same way.

Relevance comes in three tiers, the way radiologists pick a comparison:

1. same modality and same body part (last year's chest CT for today's chest CT);
2. same body part, another modality (a chest X-ray for a chest CT);
3. same modality, another body part (a head CT for a chest CT: same technique, at least).

A study sharing neither is not a relevant prior and is not returned. Within a tier the
nearest in date comes first; since priors are all before the current study, that is the
newest first. Ties (same date) fall back to the Study Instance UID, so the order is stable.

Only studies dated strictly before the current one are priors: a study of the same day is
part of the same visit (a chest CT and an abdominal CT done together), not something to
compare against, and a study without a date cannot be placed before anything.

Modalities that carry no images of their own (reports, presentation states, key object
selections, segmentations...) are ignored when comparing: every study with a structured
report would otherwise be "same modality" as every other.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from django.utils.translation import gettext, ngettext

#: Modalities of objects that describe or annotate images rather than being images.
NON_IMAGE_MODALITIES = frozenset({
    "SR",  # structured report
    "PR",  # presentation state
    "KO",  # key object selection
    "DOC",  # encapsulated document (PDF)
    "SEG",  # segmentation
    "REG",  # registration
    "RWV",  # real world value map
    "FID",  # fiducials
    "PLAN", "RTPLAN", "RTRECORD",
})


def normalize_modalities(values: Iterable[str]) -> frozenset[str]:
    """Image modalities, upper case, without blanks and without :data:`NON_IMAGE_MODALITIES`.

    Accepts DICOM's backslash-joined form too (``"CT\\SR"``), as ``Study.modalities`` holds.
    """
    found = {part.strip().upper() for value in values for part in value.split("\\")}
    return frozenset(found - NON_IMAGE_MODALITIES - {""})


def normalize_body_parts(values: Iterable[str]) -> frozenset[str]:
    """Body parts as compared: upper case, stripped, blanks dropped."""
    return frozenset(v.strip().upper() for v in values if v.strip())


@dataclass(frozen=True)
class StudyFacts:
    """What the ranking needs of a study. Build it with :meth:`of` to get it normalized."""

    uid: str
    date: datetime.date | None
    modalities: frozenset[str]
    body_parts: frozenset[str]

    @classmethod
    def of(cls, uid: str, date: datetime.date | None, modalities: Iterable[str] = (),
           body_parts: Iterable[str] = ()) -> StudyFacts:
        return cls(uid, date, normalize_modalities(modalities), normalize_body_parts(body_parts))


class Tier(enum.IntEnum):
    """How relevant a prior is; lower is more relevant."""

    SAME_MODALITY_AND_BODY_PART = 1
    SAME_BODY_PART = 2
    SAME_MODALITY = 3


@dataclass(frozen=True)
class RankedPrior:
    study: StudyFacts
    tier: Tier
    #: Days between the prior and the current study (always at least 1).
    days_before: int


def tier_of(current: StudyFacts, candidate: StudyFacts) -> Tier | None:
    """How relevant ``candidate`` is to ``current``, dates aside; None when it is not."""
    same_modality = bool(current.modalities & candidate.modalities)
    same_body_part = bool(current.body_parts & candidate.body_parts)
    if same_modality and same_body_part:
        return Tier.SAME_MODALITY_AND_BODY_PART
    if same_body_part:
        return Tier.SAME_BODY_PART
    if same_modality:
        return Tier.SAME_MODALITY
    return None


def rank_priors(current: StudyFacts, candidates: Iterable[StudyFacts]) -> list[RankedPrior]:
    """The relevant priors of ``current`` among ``candidates``, most relevant first.

    ``current`` itself may be among the candidates; it is never its own prior.
    """
    if current.date is None:
        return []
    ranked: list[RankedPrior] = []
    for candidate in candidates:
        if candidate.uid == current.uid or candidate.date is None:
            continue
        if candidate.date >= current.date:
            continue
        tier = tier_of(current, candidate)
        if tier is not None:
            ranked.append(RankedPrior(candidate, tier, (current.date - candidate.date).days))
    ranked.sort(key=lambda p: (p.tier, p.days_before, p.study.uid))
    return ranked


def _months_between(earlier: datetime.date, later: datetime.date) -> int:
    """Whole calendar months from ``earlier`` to ``later`` (Jan 31 to Feb 28 is none)."""
    months = (later.year - earlier.year) * 12 + later.month - earlier.month
    if later.day < earlier.day:
        months -= 1
    return months


def time_before(earlier: datetime.date, later: datetime.date) -> str:
    """How long before ``later`` ``earlier`` was, in words: "1 year earlier",
    "3 months earlier", "2 days earlier" (translated: "1 ano antes").

    Whole calendar years when there is at least one, else whole months, else days, as a
    doctor says it; never rounded up, so a prior is never shown as older than it is.
    """
    months = _months_between(earlier, later)
    if months >= 12:
        years = months // 12
        return ngettext("%(count)d year earlier", "%(count)d years earlier",
                        years) % {"count": years}
    if months >= 1:
        return ngettext("%(count)d month earlier", "%(count)d months earlier",
                        months) % {"count": months}
    days = (later - earlier).days
    if days <= 0:
        return gettext("same day")
    return ngettext("%(count)d day earlier", "%(count)d days earlier", days) % {"count": days}
