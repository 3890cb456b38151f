"""Which earlier studies are relevant priors of the current one, and in which order
(imaging.priors): the specification the timeline and prior recall (#12) share."""

from __future__ import annotations

import datetime

import pytest
from django.utils import translation

from imaging.priors import RankedPrior, StudyFacts, Tier, rank_priors, time_before

TODAY = datetime.date(2026, 3, 2)


def study(uid: str, date: datetime.date | None, modalities: str = "",
          body_parts: str = "") -> StudyFacts:
    return StudyFacts.of(uid, date, modalities.split(), body_parts.split())


def days_ago(days: int) -> datetime.date:
    return TODAY - datetime.timedelta(days=days)


CURRENT = study("now", TODAY, "CT", "CHEST")


def uids(ranked: list[RankedPrior]) -> list[str]:
    return [p.study.uid for p in ranked]


def test_same_modality_and_body_part_come_first_then_same_body_part_then_same_modality():
    candidates = [
        study("head-ct", days_ago(10), "CT", "HEAD"),
        study("chest-xray", days_ago(20), "CR", "CHEST"),
        study("chest-ct", days_ago(400), "CT", "CHEST"),
    ]
    ranked = rank_priors(CURRENT, candidates)
    assert uids(ranked) == ["chest-ct", "chest-xray", "head-ct"]
    assert [p.tier for p in ranked] == [Tier.SAME_MODALITY_AND_BODY_PART, Tier.SAME_BODY_PART,
                                        Tier.SAME_MODALITY]


def test_within_a_tier_the_nearest_in_date_which_is_the_newest_comes_first():
    candidates = [study(f"ct-{d}", days_ago(d), "CT", "CHEST") for d in (700, 30, 365)]
    assert uids(rank_priors(CURRENT, candidates)) == ["ct-30", "ct-365", "ct-700"]


def test_studies_of_the_same_date_keep_a_stable_order_by_uid():
    candidates = [study(uid, days_ago(5), "CT", "CHEST") for uid in ("b", "c", "a")]
    assert uids(rank_priors(CURRENT, candidates)) == ["a", "b", "c"]


def test_a_study_sharing_neither_modality_nor_body_part_is_not_a_prior():
    assert rank_priors(CURRENT, [study("knee-mr", days_ago(30), "MR", "KNEE")]) == []


def test_only_studies_before_the_current_one_are_priors():
    later = study("later", TODAY + datetime.timedelta(days=1), "CT", "CHEST")
    same_day = study("same-day", TODAY, "CT", "CHEST")
    before = study("before", days_ago(1), "CT", "CHEST")
    assert uids(rank_priors(CURRENT, [later, same_day, before])) == ["before"]


def test_the_current_study_is_never_its_own_prior():
    assert rank_priors(CURRENT, [CURRENT]) == []


def test_studies_without_a_date_are_not_priors_and_an_undated_study_has_none():
    undated = study("undated", None, "CT", "CHEST")
    assert rank_priors(CURRENT, [undated]) == []
    assert rank_priors(undated, [study("old", days_ago(9), "CT", "CHEST")]) == []


def test_a_prior_says_how_many_days_before_it_was():
    (prior,) = rank_priors(CURRENT, [study("old", days_ago(42), "CT", "CHEST")])
    assert prior.days_before == 42


def test_body_parts_compare_in_upper_case_without_surrounding_blanks():
    current = StudyFacts.of("now", TODAY, ["CT"], [" chest "])
    prior = StudyFacts.of("old", days_ago(3), ["CT"], ["Chest"])
    assert rank_priors(current, [prior])[0].tier == Tier.SAME_MODALITY_AND_BODY_PART


def test_blank_body_parts_match_nothing():
    current = StudyFacts.of("now", TODAY, ["MR"], ["", "  "])
    prior = StudyFacts.of("old", days_ago(3), ["CT"], [""])
    assert rank_priors(current, [prior]) == []


def test_modalities_compare_in_upper_case_and_in_dicoms_backslash_form():
    current = StudyFacts.of("now", TODAY, ["ct\\SR"], [])
    prior = StudyFacts.of("old", days_ago(3), [" CT "], [])
    assert rank_priors(current, [prior])[0].tier == Tier.SAME_MODALITY


@pytest.mark.parametrize("modality", ["SR", "PR", "KO", "DOC", "SEG"])
def test_non_image_modalities_do_not_make_two_studies_related(modality):
    current = study("now", TODAY, f"CT {modality}", "CHEST")
    prior = study("old", days_ago(3), f"MR {modality}", "KNEE")
    assert rank_priors(current, [prior]) == []


def test_a_study_with_several_body_parts_matches_on_any_of_them():
    current = study("now", TODAY, "CT", "CHEST ABDOMEN")
    prior = study("old", days_ago(3), "CT", "ABDOMEN PELVIS")
    assert rank_priors(current, [prior])[0].tier == Tier.SAME_MODALITY_AND_BODY_PART


# --- the date difference in words -----------------------------------------------------------


@pytest.mark.parametrize(("earlier", "later", "words"), [
    (datetime.date(2025, 3, 2), datetime.date(2026, 3, 2), "1 year earlier"),
    (datetime.date(2023, 3, 1), datetime.date(2026, 3, 2), "3 years earlier"),
    (datetime.date(2025, 3, 3), datetime.date(2026, 3, 2), "11 months earlier"),
    (datetime.date(2025, 12, 2), datetime.date(2026, 3, 2), "3 months earlier"),
    (datetime.date(2026, 2, 2), datetime.date(2026, 3, 2), "1 month earlier"),
    (datetime.date(2026, 1, 31), datetime.date(2026, 2, 28), "28 days earlier"),
    (datetime.date(2026, 2, 28), datetime.date(2026, 3, 2), "2 days earlier"),
    (datetime.date(2026, 3, 1), datetime.date(2026, 3, 2), "1 day earlier"),
    (datetime.date(2026, 3, 2), datetime.date(2026, 3, 2), "same day"),
])
def test_the_date_difference_is_in_whole_years_else_months_else_days(earlier, later, words):
    with translation.override("en"):
        assert time_before(earlier, later) == words


def test_a_leap_day_prior_is_a_whole_year_earlier_on_the_next_first_of_march():
    with translation.override("en"):
        assert time_before(datetime.date(2024, 2, 29), datetime.date(2025, 3, 1)) == (
            "1 year earlier")
        assert time_before(datetime.date(2024, 2, 29), datetime.date(2025, 2, 28)) == (
            "11 months earlier")
