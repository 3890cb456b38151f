"""Accept headers as clients really send them choose the representation, or 406."""

from __future__ import annotations

import pytest

from dicomweb.negotiation import NotAcceptable, Offer, negotiate, parse_accept

DICOM = [Offer("application/dicom", True)]
FRAMES = [Offer("application/octet-stream", True), Offer("image/jls", True)]
IMAGES = [Offer("image/jpeg", False), Offer("image/png", False)]


def test_q_values_order_the_ranges_and_keep_header_order_for_ties():
    ranges = parse_accept("image/png;q=0.5, image/jpeg, */*;q=0.1, image/gif")
    assert [r.media_type for r in ranges] == ["image/jpeg", "image/gif", "image/png", "*/*"]


def test_quoted_parameters_with_commas_and_semicolons_stay_whole():
    [r] = parse_accept('multipart/related; type="application/dicom"; transfer-syntax=*')
    assert r.multipart and r.part_type == "application/dicom"
    assert r.transfer_syntax == "*"


def test_zero_and_malformed_q_are_dropped():
    assert parse_accept("image/png;q=0, image/jpeg;q=x, image/gif;q=2") == []


def test_ohifs_frame_header_takes_any_transfer_syntax():
    choice = negotiate('multipart/related; type="application/octet-stream"; transfer-syntax=*',
                       FRAMES)
    assert choice.media_type == "application/octet-stream"
    assert choice.transfer_syntax == "*"


def test_combined_headers_pick_the_first_usable_range():
    header = ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50,'
              ' multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1')
    choice = negotiate(header, DICOM, usable=lambda _o, ts: ts != "1.2.840.10008.1.2.4.50")
    assert choice.transfer_syntax == "1.2.840.10008.1.2.1"


def test_no_header_means_the_first_offer():
    assert negotiate(None, IMAGES).media_type == "image/jpeg"
    assert negotiate("", DICOM).transfer_syntax is None


def test_wildcards():
    assert negotiate("*/*", IMAGES).media_type == "image/jpeg"
    assert negotiate("image/*", IMAGES).media_type == "image/jpeg"
    assert negotiate("image/gif, image/png;q=0.9", IMAGES).media_type == "image/png"
    assert negotiate("multipart/related", DICOM).media_type == "application/dicom"


def test_single_part_ranges_do_not_match_multipart_offers():
    with pytest.raises(NotAcceptable, match="multipart/related"):
        negotiate("application/dicom", DICOM)


def test_406_names_what_is_offered():
    with pytest.raises(NotAcceptable) as refused:
        negotiate("image/gif", IMAGES)
    assert "image/jpeg" in str(refused.value) and "image/png" in str(refused.value)
