"""A patient's studies for the doctors' workspace: newest first, each with its series, and
the relevant priors of one study marked (the ranking is :mod:`imaging.priors`).

Only what the access policy lets the caller find is listed (:func:`policies.visible_studies`);
deciding whether the caller may open the patient or study at all, and recording it, is the
page's call to :mod:`imaging.access`. Thumbnails are the DICOMweb thumbnail endpoint's,
which applies the policy and keeps the trail for each image itself.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db.models import Exists, F, OuterRef, Prefetch, QuerySet, Subquery
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from . import policies
from .models import Instance, Patient, Series, Study
from .priors import RankedPrior, StudyFacts, Tier, rank_priors, time_before

if TYPE_CHECKING:
    from .principals import Caller

TIER_LABELS = {
    Tier.SAME_MODALITY_AND_BODY_PART: _("same modality and body part"),
    Tier.SAME_BODY_PART: _("same body part"),
    Tier.SAME_MODALITY: _("same modality"),
}


@dataclass(frozen=True)
class SeriesCard:
    uid: str
    modality: str
    body_part: str
    description: str
    number: int | None
    count: int
    #: The series' DICOMweb thumbnail; empty when it holds no image (a report, say).
    thumbnail_url: str
    #: The first instance, for its header; empty for an empty series.
    first_instance_uid: str


@dataclass(frozen=True)
class PriorMark:
    """How a study stands as a prior of the study the timeline ranks against."""

    tier: Tier
    days_before: int
    #: "1 year earlier", in the active language.
    time_before: str

    @property
    def label(self) -> str:
        return str(TIER_LABELS[self.tier])


@dataclass(frozen=True)
class StudyCard:
    study: Study
    series: list[SeriesCard]
    facts: StudyFacts
    prior: PriorMark | None = None

    @property
    def uid(self) -> str:
        return self.study.study_instance_uid


@dataclass(frozen=True)
class Timeline:
    patient: Patient
    #: Newest first; undated studies last.
    studies: list[StudyCard]
    #: The study the priors are ranked against: the newest, unless another was chosen.
    current: StudyCard | None
    #: The relevant priors of ``current``, most relevant first (the same cards).
    priors: list[StudyCard] = field(default_factory=list)


def _series_queryset() -> QuerySet[Series]:
    instances = Instance.objects.filter(series=OuterRef("pk"))
    return (Series.objects
            .annotate(has_image=Exists(instances.exclude(rows=None)),
                      first_instance=Subquery(instances.order_by("instance_number", "pk")
                                              .values("sop_instance_uid")[:1]))
            .order_by(F("series_number").asc(nulls_last=True), "pk"))


def studies_of(caller: Caller, patient: Patient) -> QuerySet[Study]:
    """``patient``'s studies that ``caller`` may find, newest first, series fetched."""
    return (policies.visible_studies(caller).filter(patient=patient)
            .prefetch_related(Prefetch("series", queryset=_series_queryset()))
            .order_by(F("study_date").desc(nulls_last=True), "-study_time", "-pk"))


def facts_of(study: Study) -> StudyFacts:
    """The ranking's view of a study whose series are fetched (:func:`studies_of`)."""
    series = list(study.series.all())
    return StudyFacts.of(study.study_instance_uid, study.study_date,
                         [study.modalities, *(s.modality for s in series)],
                         [s.body_part for s in series])


def series_cards(study: Study) -> list[SeriesCard]:
    cards = []
    for series in study.series.all():
        thumbnail = ""
        if getattr(series, "has_image", False):
            thumbnail = reverse("dicomweb:series-thumbnail",
                                args=[study.study_instance_uid, series.series_instance_uid])
        cards.append(SeriesCard(
            uid=series.series_instance_uid, modality=series.modality,
            body_part=series.body_part, description=series.description,
            number=series.series_number, count=series.num_instances,
            thumbnail_url=thumbnail,
            first_instance_uid=getattr(series, "first_instance", None) or "",
        ))
    return cards


def _mark(ranked: RankedPrior, current_date: datetime.date) -> PriorMark:
    assert ranked.study.date is not None  # priors are dated
    return PriorMark(ranked.tier, ranked.days_before,
                     time_before(ranked.study.date, current_date))


def _ranked_cards(current: StudyCard, cards: Sequence[StudyCard]) -> list[StudyCard]:
    by_uid = {card.uid: card for card in cards}
    ranked = rank_priors(current.facts, (card.facts for card in cards))
    if not ranked or current.study.study_date is None:
        return []
    return [StudyCard(by_uid[r.study.uid].study, by_uid[r.study.uid].series,
                      by_uid[r.study.uid].facts, _mark(r, current.study.study_date))
            for r in ranked]


def build_timeline(caller: Caller, patient: Patient, current_uid: str = "") -> Timeline:
    """``patient``'s timeline as ``caller`` may see it, priors ranked against the study
    ``current_uid`` (one of them) or else the newest."""
    cards = [StudyCard(s, series_cards(s), facts_of(s)) for s in studies_of(caller, patient)]
    if not cards:
        return Timeline(patient, [], None)
    current = next((c for c in cards if c.uid == current_uid), cards[0])
    priors = _ranked_cards(current, cards)
    marks = {card.uid: card for card in priors}
    studies = [marks.get(card.uid, card) for card in cards]
    return Timeline(patient, studies, current, priors)


def priors_of(caller: Caller, study: Study) -> list[StudyCard]:
    """The relevant priors of ``study`` among its patient's studies ``caller`` may find,
    most relevant first."""
    cards = [StudyCard(s, series_cards(s), facts_of(s))
             for s in studies_of(caller, study.patient)]
    current = next((c for c in cards if c.uid == study.study_instance_uid), None)
    return _ranked_cards(current, cards) if current is not None else []


def study_card(study: Study) -> StudyCard:
    """One study with its series, fetched here (the study page)."""
    fetched = Study.objects.prefetch_related(
        Prefetch("series", queryset=_series_queryset())).get(pk=study.pk)
    fetched.patient = study.patient
    return StudyCard(fetched, series_cards(fetched), facts_of(fetched))
