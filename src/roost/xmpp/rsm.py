"""Result Set Management (XEP-0059): the paging request a client sends and the answer's ``<set/>``.

A request (``<set xmlns='http://jabber.org/protocol/rsm'/>`` inside a query) asks for at most
``<max/>`` items, either following the item whose id is in ``<after/>`` (§2.2, paging forward)
or preceding the one in ``<before/>`` (§2.3, paging backward); an empty ``<before/>`` asks for
the last page (§2.5). ``<index/>`` (§2.4, jumping to a position) is read so that callers can
refuse it. The answer (§2.6) names the first and last item of the page and may give the total
``<count/>``; a page without items carries only the count.

:func:`parse_request` raises :class:`RSMError` for what §2 does not allow (a ``<max/>`` or
``<index/>`` that is not a non-negative integer, an empty ``<after/>``, a child given twice),
which callers answer with ``<bad-request/>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from roost.xmpp.element import Element

RSM: Final = "http://jabber.org/protocol/rsm"


class RSMError(ValueError):
    """A paging request that XEP-0059 does not allow."""


@dataclass(slots=True, frozen=True)
class RSMRequest:
    """What the client asked for; ``before == ""`` is the empty ``<before/>`` (last page)."""

    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None


def find_set(parent: Element) -> Element | None:
    return parent.find("set", RSM)


def parse_request(element: Element) -> RSMRequest:
    seen: set[str] = set()
    values: dict[str, str] = {}
    for child in element.elements(xmlns=RSM):
        if child.name in seen:
            raise RSMError(f"<{child.name}/> appears twice")
        seen.add(child.name)
        values[child.name] = child.text.strip()
    after = values.get("after")
    if after is not None and not after:
        raise RSMError("<after/> needs the id of an item")
    return RSMRequest(
        max=_count(values, "max"),
        after=after,
        before=values.get("before"),
        index=_count(values, "index"),
    )


def _count(values: dict[str, str], name: str) -> int | None:
    text = values.get(name)
    if text is None:
        return None
    # isdigit() alone would accept other scripts' digits and superscripts, which int() rejects.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise RSMError(f"<{name}/> must be a non-negative integer, not {text!r}")
    return int(text)


def result_set(
    first: str | None, last: str | None, count: int | None, first_index: int | None = None
) -> Element:
    """The ``<set/>`` describing a page: ids of its first and last items, and the count."""
    answer = Element("set", RSM)
    if first is not None:
        item = answer.add_text("first", first)
        if first_index is not None:
            item.attrs["index"] = str(first_index)
    if last is not None:
        answer.add_text("last", last)
    if count is not None:
        answer.add_text("count", str(count))
    return answer
