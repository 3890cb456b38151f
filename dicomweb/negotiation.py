"""Content negotiation for WADO-RS: which representation an ``Accept`` header asks for.

The resources offer a few representations each (:class:`Offer`); :func:`negotiate` reads
the header the way clients really send it (several media ranges, ``q`` values, ``type=``
and ``transfer-syntax=`` parameters, ``*/*``, several ``Accept`` headers that the server
joined with commas, as OHIF does) and answers with the first offer the client prefers,
together with the transfer syntax the client named for it. When nothing
fits it raises :class:`NotAcceptable`, which the views turn into ``406``.

Pure code: no Django, no pydicom.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ANY_TRANSFER_SYNTAX = "*"


class NotAcceptable(Exception):
    """No offered representation matches the request; the message says what is offered."""


@dataclass(frozen=True)
class MediaRange:
    """One element of an ``Accept`` header, e.g. ``multipart/related; type="x"; q=0.5``."""

    media_type: str  # "multipart/related", "image/*", "*/*"
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def multipart(self) -> bool:
        return self.media_type == "multipart/related"

    @property
    def part_type(self) -> str:
        """The type of the parts (``type=`` of a multipart range) or the type itself."""
        if self.multipart:
            return self.params.get("type", "")
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def __str__(self) -> str:
        params = "".join(f'; {k}="{v}"' if k == "type" else f"; {k}={v}"
                         for k, v in self.params.items())
        return f"{self.media_type}{params}"


@dataclass(frozen=True)
class Offer:
    """A representation a resource can give: ``media_type`` alone or as multipart parts."""

    media_type: str
    multipart: bool

    def __str__(self) -> str:
        if self.multipart:
            return f'multipart/related; type="{self.media_type}"'
        return self.media_type


@dataclass(frozen=True)
class Choice:
    """The chosen offer and the transfer syntax asked for with it.

    ``transfer_syntax`` is a UID, ``"*"`` for any, or ``None`` when the chosen media range
    named none (the resource's default applies).
    """

    offer: Offer
    transfer_syntax: str | None
    media_range: MediaRange

    @property
    def media_type(self) -> str:
        return self.offer.media_type

    @property
    def multipart(self) -> bool:
        return self.offer.multipart


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_accept(header: str) -> list[MediaRange]:
    """The media ranges of ``header``, most preferred first (stable for equal ``q``).

    Ranges with ``q=0`` or a malformed ``q`` are dropped; parameter names are lowercased
    and quotes removed. ``transfer-syntax`` values are kept as written (UIDs or ``*``).
    """
    ranges: list[MediaRange] = []
    for element in _split(header, ","):
        pieces = _split(element, ";")
        media_type = pieces[0].strip().lower()
        if not media_type:
            continue
        if "/" not in media_type:
            if media_type != "*":
                continue
            media_type = "*/*"
        params: dict[str, str] = {}
        q = 1.0
        valid = True
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"').strip()
            if not name:
                continue
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    valid = False
                    break
                if not 0.0 <= q <= 1.0:
                    valid = False
                    break
            else:
                params[name] = value.lower() if name == "type" else value
        if valid and q > 0:
            ranges.append(MediaRange(media_type, params, q))
    return sorted(ranges, key=lambda r: -r.q)  # sorted() is stable: header order for ties


def _type_matches(pattern: str, media_type: str) -> bool:
    if pattern in ("", "*/*", "*"):
        return True
    major, _, minor = pattern.partition("/")
    offer_major, _, offer_minor = media_type.partition("/")
    return major == offer_major and minor in ("*", offer_minor)


def matches(media_range: MediaRange, offer: Offer) -> bool:
    """Whether ``media_range`` accepts ``offer``.

    ``*/*`` accepts anything; ``multipart/related`` without ``type=`` accepts any
    multipart offer; a single-part range (``image/jpeg``, ``application/*``) accepts the
    single-part offer of that type.
    """
    if media_range.media_type == "*/*":
        return True
    if media_range.multipart:
        return offer.multipart and _type_matches(media_range.part_type, offer.media_type)
    return not offer.multipart and _type_matches(media_range.media_type, offer.media_type)


def negotiate(
    header: str | None, offers: Sequence[Offer],
    usable: Callable[[Offer, str | None], bool] | None = None,
) -> Choice:
    """Choose among ``offers`` (the server's preference order) for an ``Accept`` header.

    Media ranges are tried in the client's order of preference; the first that matches an
    offer, and whose transfer syntax ``usable(offer, transfer_syntax)`` accepts (when
    given), wins. No header, or an empty one, means the first offer with no transfer
    syntax. Raises :class:`NotAcceptable`.
    """
    if not offers:
        raise ValueError("a resource must offer at least one representation")
    if not (header or "").strip():
        ranges = [MediaRange("*/*")]
    else:
        ranges = parse_accept(header or "")
    for media_range in ranges:
        for offer in offers:
            if matches(media_range, offer) and (
                usable is None or usable(offer, media_range.transfer_syntax)
            ):
                return Choice(offer, media_range.transfer_syntax, media_range)
    raise NotAcceptable(
        f"cannot give any of the accepted media types ({header}); "
        f"this resource offers: {', '.join(str(o) for o in offers)}"
    )
