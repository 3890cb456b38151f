"""Priors ready in time: when a study arrives, its patient's most relevant earlier studies
(ranked by ``imaging.priors``, as the doctors' timeline ranks them) are recalled to the
local tier in the background, so the comparison opens at local speed.

Dispatched once the ingest transaction has committed, by ``replica.copies.on_stored``'s
hand-over to the dispatch thread: one task per arriving study and a few minutes, however
many objects it arrives in.
"""

from __future__ import annotations

from collections import Counter

from django.conf import settings
from django.core.cache import cache

from imaging.models import Study
from imaging.priors import rank_priors
from imaging.timeline import facts_of

from . import recall
from .keys import KeyRing

#: One dispatch per study in this window (its objects arrive one C-STORE at a time).
DISPATCH_WINDOW_SECONDS = 300


def relevant_priors(study_id: int, count: int | None = None) -> list[int]:
    """Ids of the ``count`` most relevant priors of study ``study_id`` (default
    ``RECALL_PRIORS_COUNT``), most relevant first."""
    count = settings.RECALL_PRIORS_COUNT if count is None else count
    study = Study.objects.filter(pk=study_id).prefetch_related("series").first()
    if study is None or count <= 0:
        return []
    others = list(Study.objects.filter(patient_id=study.patient_id).exclude(pk=study.pk)
                  .prefetch_related("series"))
    by_uid = {s.study_instance_uid: s.pk for s in others}
    ranked = rank_priors(facts_of(study), [facts_of(s) for s in others])
    return [by_uid[p.study.uid] for p in ranked[:count]]


def recall_priors(study_id: int, ring: KeyRing | None = None) -> Counter[recall.Outcome]:
    """Recall the evicted objects of study ``study_id``'s relevant priors; safe to repeat
    (an object back on the local tier is left alone)."""
    outcomes: Counter[recall.Outcome] = Counter()
    priors = relevant_priors(study_id)
    if not priors:
        return outcomes
    ring = ring or KeyRing.from_settings()
    evicted = list(recall.evicted_instances(series__study_id__in=priors)
                   .order_by("pk").values_list("pk", flat=True))
    for _, outcome in recall.recall_many(evicted, ring):
        outcomes[outcome] += 1
    return outcomes


def dispatch(study_ids: list[int]) -> int:
    """Queue ``recall_priors`` for each of these studies not queued in the last
    :data:`DISPATCH_WINDOW_SECONDS`; returns how many were queued."""
    from .tasks import recall_priors as task

    queued = 0
    for study_id in sorted(set(study_ids)):
        if cache.add(f"replica:recall-priors:{study_id}", 1, DISPATCH_WINDOW_SECONDS):
            task.delay(study_id)
            queued += 1
    return queued
