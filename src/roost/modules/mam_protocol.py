"""The wire format of Message Archive Management (XEP-0313, XEP-0441), apart from the module.

Pure functions between elements and storage records, so that each rule can be tested alone:
reading a query (data form fields and RSM paging) into an :class:`ArchiveQuery`, writing the
result messages and the ``<fin/>``, the query form, archive metadata, and archiving
preferences, and reading archived stanzas back. Every malformed input raises a
:class:`~roost.xmpp.errors.StanzaError` (see :func:`parse_query` for which).

Dates are XEP-0082 DateTime (``2010-07-10T23:08:25.123456Z``, or an offset instead of ``Z``),
read strictly: a date without a time zone is refused rather than guessed. Stamps are written
with microseconds, the precision the archive keeps, so that a stamp a client read from a
result can be given back as ``start`` or ``end`` and match that message exactly.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from roost.storage.base import ArchivedMessage, ArchivePage, ArchivePrefs, ArchiveQuery
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError
from roost.xmpp.forms import Field, Form, FormError, find_form, parse_form
from roost.xmpp.jid import InvalidJID, parse_jid
from roost.xmpp.parser import XMLStreamParser, parse_element
from roost.xmpp.rsm import RSMError, find_set, parse_request, result_set

log = logging.getLogger(__name__)

MAM: Final = "urn:xmpp:mam:2"
MAM_EXTENDED: Final = "urn:xmpp:mam:2#extended"
SID: Final = "urn:xmpp:sid:0"  # XEP-0359 unique and stable stanza ids
FORWARD: Final = "urn:xmpp:forward:0"  # XEP-0297
XDATA_VALIDATE: Final = "http://jabber.org/protocol/xdata-validate"  # XEP-0122

PREFS_MODES: Final = frozenset({"always", "never", "roster"})
MAX_PREFS_JIDS: Final = 1000  # per list: prefs are read on the message path

_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", re.ASCII
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# -- dates (XEP-0082) -----------------------------------------------------------------------


def parse_datetime(text: str) -> float:
    """POSIX time of a XEP-0082 DateTime, to the microsecond; ValueError when malformed."""
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a XEP-0082 DateTime")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    offset = timedelta(0)
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    moment = datetime(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second),
        int((fraction or "0")[:6].ljust(6, "0")),
        tzinfo=timezone(offset),  # ValueError for offsets of a day or more
    )
    # Whole microseconds, then one division: the float nearest to that microsecond, which is
    # how the archive reports a stamp (seq / 1e6), so the two compare equal.
    return ((moment - _EPOCH) // _MICROSECOND) / 1e6


def format_datetime(stamp: float) -> str:
    moment = datetime.fromtimestamp(stamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


# -- queries (XEP-0313 §4) ------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class ParsedQuery:
    query: ArchiveQuery
    queryid: str | None
    flip: bool  # send the page newest first (XEP-0313 §4.3.4 flipped pages)


# The fields a query form may have, with their types for the form a client asks for (§4.1.5).
QUERY_FIELDS: Final = (
    ("with", "jid-single"),
    ("start", "text-single"),
    ("end", "text-single"),
    ("before-id", "text-single"),
    ("after-id", "text-single"),
    ("ids", "list-multi"),
)
_KNOWN_FIELDS: Final = frozenset({"FORM_TYPE"} | {var for var, _ in QUERY_FIELDS})


def parse_query(payload: Element, *, max_page: int) -> ParsedQuery:
    """Read a ``<query xmlns='urn:xmpp:mam:2'/>`` of an IQ set.

    Raises ``<bad-request/>`` for a malformed data form or RSM set, a form of another
    FORM_TYPE, a field given several values where it takes one, an invalid JID or date, and
    more ids than a page holds; ``<feature-not-implemented/>`` for a field this server does
    not know (§4.1.5) and for RSM ``<index/>``. The page size is the client's ``<max/>`` capped
    at ``max_page``, or ``max_page`` when the client gives none.
    """
    try:
        form = _query_form(payload)
        rsm_set = find_set(payload)
        paging = parse_request(rsm_set) if rsm_set is not None else None
    except (FormError, RSMError) as exc:
        raise errors.bad_request(str(exc)) from None
    filters = _filters(form, max_page) if form is not None else ArchiveQuery()
    limit = max_page
    after = before = None
    backward = False
    if paging is not None:
        if paging.index is not None:
            raise errors.feature_not_implemented("paging by index is not supported")
        if paging.max is not None:
            limit = min(paging.max, max_page)
        after = paging.after
        if paging.before is not None:
            backward = True  # XEP-0059 §2.3, §2.5: the page just before, or the last one
            before = paging.before or None
    query = ArchiveQuery(
        with_jid=filters.with_jid,
        start=filters.start,
        end=filters.end,
        after_id=filters.after_id,
        before_id=filters.before_id,
        ids=filters.ids,
        after=after,
        before=before,
        backward=backward,
        limit=limit,
    )
    flip = payload.find("flip-page", MAM) is not None
    return ParsedQuery(query, payload.attrs.get("queryid"), flip)


def _query_form(payload: Element) -> Form | None:
    element = find_form(payload)
    if element is None:
        return None
    form = parse_form(element)
    if form.type != "submit":
        raise FormError("a query form is of type 'submit'")
    if form.form_type not in (None, MAM):
        raise FormError(f"a query form has FORM_TYPE {MAM}")
    return form


def _filters(form: Form, max_page: int) -> ArchiveQuery:
    for item in form.fields:
        if item.var not in _KNOWN_FIELDS:
            raise errors.feature_not_implemented(f"unknown field {item.var!r}")
    try:
        with_text = form.value("with")
        start = form.value("start")
        end = form.value("end")
        after_id = form.value("after-id")
        before_id = form.value("before-id")
    except FormError as exc:
        raise errors.bad_request(str(exc)) from None
    with_jid = None
    if with_text is not None:
        try:
            with_jid = str(parse_jid(with_text))
        except InvalidJID as exc:
            raise errors.bad_request(f"'with': {exc}") from None
    ids_field = form.get("ids")
    ids = None
    if ids_field is not None:
        ids = tuple(value for value in ids_field.values if value)
        if len(ids) > max_page:
            raise errors.bad_request(f"at most {max_page} ids at once")
    return ArchiveQuery(
        with_jid=with_jid,
        start=_date(start, "start"),
        end=_date(end, "end"),
        after_id=after_id,
        before_id=before_id,
        ids=ids,
    )


def _date(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_datetime(text)
    except ValueError:
        raise errors.bad_request(f"'{name}' is not a XEP-0082 DateTime: {text!r}") from None


def query_form() -> Element:
    """The ``<query/>`` answering an IQ get: the form a query may fill in (§4.1.5)."""
    fields = [Field("FORM_TYPE", "hidden", [MAM])]
    for var, kind in QUERY_FIELDS:
        extra = []
        if var == "ids":
            # XEP-0313 §4.1.5: an open list, which XEP-0122 says with <open/>.
            validate = Element("validate", XDATA_VALIDATE, {"datatype": "xs:string"})
            validate.add("open")
            extra.append(validate)
        fields.append(Field(var, kind, extra=extra))
    query = Element("query", MAM)
    query.append(Form("form", fields).to_element())
    return query


# -- results (XEP-0313 §4.2, §4.3) ----------------------------------------------------------


def result_message(
    message: ArchivedMessage, original: Element, *, to: str, owner: str, queryid: str | None
) -> Element:
    """One result: the archived ``original`` forwarded (XEP-0297) with its delay stamp."""
    out = Element("message", ns.CLIENT, {"to": to, "from": owner})
    attrs = {"queryid": queryid, "id": message.id} if queryid is not None else {"id": message.id}
    forwarded = out.add("result", MAM, attrs).add("forwarded", FORWARD)
    forwarded.add("delay", ns.DELAY, {"stamp": format_datetime(message.stamp)})
    forwarded.append(original)
    return out


def fin(page: ArchivePage) -> Element:
    """The ``<fin/>`` of the IQ result, sent after the results (§4.3.2)."""
    messages = page.messages
    element = Element("fin", MAM, {"complete": "true" if page.complete else "false"})
    element.append(
        result_set(
            messages[0].id if messages else None,
            messages[-1].id if messages else None,
            page.count,
        )
    )
    return element


def metadata(first: ArchivedMessage | None, last: ArchivedMessage | None) -> Element:
    """Archive metadata (§5): the first and last message; empty for an empty archive."""
    element = Element("metadata", MAM)
    for name, message in (("start", first), ("end", last)):
        if message is not None:
            element.add(name, attrs={"id": message.id, "timestamp": format_datetime(message.stamp)})
    return element


# -- preferences (XEP-0441) -----------------------------------------------------------------


def parse_prefs(payload: Element) -> ArchivePrefs:
    """Read a ``<prefs/>`` of an IQ set; ``<bad-request/>`` when malformed (JIDs normalised)."""
    default = payload.attrs.get("default")
    if default not in PREFS_MODES:
        raise errors.bad_request(f"'default' is one of {sorted(PREFS_MODES)}")
    lists: dict[str, tuple[str, ...]] = {"always": (), "never": ()}
    for name in lists:
        containers = list(payload.elements(name, MAM))
        if len(containers) > 1:
            raise errors.bad_request(f"<{name}/> appears twice")
        if not containers:
            continue
        jids: dict[str, None] = {}
        for item in containers[0].elements("jid", MAM):
            try:
                jids[str(parse_jid(item.text.strip()))] = None
            except InvalidJID as exc:
                raise errors.bad_request(f"<{name}/>: {exc}") from None
        if len(jids) > MAX_PREFS_JIDS:
            raise errors.bad_request(f"at most {MAX_PREFS_JIDS} JIDs in <{name}/>")
        lists[name] = tuple(jids)
    return ArchivePrefs(default, lists["always"], lists["never"])


def prefs_element(prefs: ArchivePrefs) -> Element:
    element = Element("prefs", MAM, {"default": prefs.default})
    for name, jids in (("always", prefs.always), ("never", prefs.never)):
        container = element.add(name)
        for jid in jids:
            container.add_text("jid", jid)
    return element


# -- stored messages -----------------------------------------------------------------------

_STORED_HEADER: Final = f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAM}'>".encode()


def parse_stored(messages: list[ArchivedMessage]) -> list[Element]:
    """The stored stanzas of a page, parsed.

    One parser reads the whole page (a parser per message would cost more than the rest of
    the query); should that not give one element per message, each is read alone, and one
    that cannot be read becomes an empty message rather than failing the query.
    """
    if not messages:
        return []
    data = "".join(message.stanza for message in messages).encode()
    parser = XMLStreamParser(max_stanza=len(data) + 1)
    try:
        parser.feed(_STORED_HEADER)
        elements = [event for event in parser.feed(data) if isinstance(event, Element)]
    except StreamError:
        elements = []
    if len(elements) == len(messages) and parser.depth == 1:
        return elements
    return [_parse_stored_alone(message) for message in messages]


def _parse_stored_alone(message: ArchivedMessage) -> Element:
    try:
        return parse_element(message.stanza)
    except StreamError:
        log.warning("archived message %s cannot be read", message.id)
        return Element("message", ns.CLIENT)
