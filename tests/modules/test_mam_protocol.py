"""The wire format of message archives: dates, query parsing, prefs, data forms and RSM."""

from __future__ import annotations

import itertools
import time

import pytest

from roost.modules.mam_protocol import (
    MAM,
    ParsedQuery,
    format_datetime,
    parse_datetime,
    parse_prefs,
    parse_query,
    parse_stored,
    prefs_element,
    query_form,
)
from roost.modules.mam_records import ArchiveIds
from roost.storage.base import ArchivedMessage, ArchivePrefs, ArchiveQuery, archive_id_seq
from roost.xmpp.errors import StanzaError
from roost.xmpp.forms import DATA_FORMS, Field, Form, FormError, parse_form
from roost.xmpp.parser import parse_element
from roost.xmpp.rsm import RSM, RSMError, RSMRequest, parse_request, result_set

# -- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stamp"),
    [
        ("1970-01-01T00:00:00Z", 0.0),
        ("2010-07-10T23:08:25Z", 1278803305.0),
        ("2010-07-10T23:08:25.5Z", 1278803305.5),
        ("2010-07-10T23:08:25.123456789Z", 1278803305.123456),  # beyond microseconds: cut
        ("2010-07-11T01:08:25+02:00", 1278803305.0),
        ("2010-07-10T20:38:25-02:30", 1278803305.0),
    ],
)
def test_dates_are_read_as_xep_0082_datetimes(text: str, stamp: float) -> None:
    assert parse_datetime(text) == stamp


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2010-07-10",  # a date is not a DateTime
        "2010-07-10T23:08:25",  # no time zone: refused, not guessed
        "2010-13-10T23:08:25Z",
        "2010-07-10T24:08:25Z",
        "2010-07-10T23:08:25.Z",
        "2010-07-10 23:08:25Z",
        "2010-07-10T23:08:25+24:00",
        "٢٠١٠-07-10T23:08:25Z",  # other scripts' digits
    ],
)
def test_malformed_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_a_written_stamp_reads_back_to_the_same_microsecond() -> None:
    ids = ArchiveIds()
    for _ in range(2000):
        _, seq = ids.next()
        text = format_datetime(seq / 1e6)
        assert text.endswith("Z")
        assert len(text) == len("2010-07-10T23:08:25.123456Z")
        assert parse_datetime(text) == seq / 1e6


# -- archive ids ----------------------------------------------------------------------------------


def test_archive_ids_sort_in_the_order_they_were_made_and_begin_with_their_seq() -> None:
    ids = ArchiveIds()
    made = [ids.next() for _ in range(5000)]
    texts = [text for text, _ in made]
    assert texts == sorted(texts)
    assert len(set(texts)) == len(texts)
    seqs = [seq for _, seq in made]
    assert all(a < b for a, b in itertools.pairwise(seqs))
    assert all(len(text) == ArchiveIds.LENGTH for text in texts)
    assert [archive_id_seq(text) for text in texts] == seqs


def test_archive_ids_continue_above_the_last_stored_seq() -> None:
    ids = ArchiveIds()
    future = time.time_ns() // 1000 + 3_600_000_000  # as if the clock had stepped back an hour
    ids.advance(future)
    _, seq = ids.next()
    assert seq == future + 1


def test_ids_of_two_processes_differ_in_the_same_microsecond() -> None:
    first, second = ArchiveIds(), ArchiveIds()
    now = time.time_ns() // 1000 + 1_000_000
    first.advance(now)
    second.advance(now)
    (a, seq_a), (b, seq_b) = first.next(), second.next()
    assert seq_a == seq_b == now + 1
    assert a != b
    assert archive_id_seq(a) == archive_id_seq(b) == now + 1


# -- queries --------------------------------------------------------------------------------------


def query(inner: str = "", attrs: str = "") -> ParsedQuery:
    return parse_query(parse_element(f"<query xmlns='{MAM}' {attrs}>{inner}</query>"), max_page=50)


def form(*fields: tuple[str, list[str]], kind: str = "submit", form_type: bool = True) -> str:
    hidden = (
        f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>" if form_type else ""
    )
    rendered = "".join(
        f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>"
        for var, values in fields
    )
    return f"<x xmlns='{DATA_FORMS}' type='{kind}'>{hidden}{rendered}</x>"


def condition(inner: str) -> str:
    with pytest.raises(StanzaError) as caught:
        query(inner)
    return caught.value.condition


def test_an_empty_query_asks_for_the_first_full_page() -> None:
    parsed = query()
    assert parsed == ParsedQuery(ArchiveQuery(limit=50), None, False)


def test_query_id_flip_and_paging_are_read() -> None:
    parsed = query(
        f"<set xmlns='{RSM}'><max>10</max><after>abc</after></set><flip-page/>", "queryid='q1'"
    )
    assert (parsed.queryid, parsed.flip) == ("q1", True)
    assert (parsed.query.limit, parsed.query.after, parsed.query.backward) == (10, "abc", False)


def test_an_empty_before_asks_for_the_last_page_and_a_full_one_for_the_page_before() -> None:
    last = query(f"<set xmlns='{RSM}'><max>5</max><before/></set>").query
    assert (last.backward, last.before, last.limit) == (True, None, 5)
    before = query(f"<set xmlns='{RSM}'><before>xyz</before></set>").query
    assert (before.backward, before.before) == (True, "xyz")


def test_max_is_capped_by_the_server() -> None:
    assert query(f"<set xmlns='{RSM}'><max>100000</max></set>").query.limit == 50
    assert query(f"<set xmlns='{RSM}'><max>0</max></set>").query.limit == 0


def test_form_fields_become_filters() -> None:
    parsed = query(
        form(
            ("with", ["Bob@LocalHost/Phone"]),
            ("start", ["2010-07-10T23:08:25Z"]),
            ("end", ["2010-07-11T00:00:00Z"]),
            ("after-id", ["a1"]),
            ("before-id", ["b2"]),
            ("ids", ["i1", "i2"]),
        )
    ).query
    assert parsed.with_jid == "bob@localhost/Phone"  # normalised, resource kept
    assert (parsed.start, parsed.end) == (1278803305.0, 1278806400.0)
    assert (parsed.after_id, parsed.before_id, parsed.ids) == ("a1", "b2", ("i1", "i2"))


def test_empty_fields_and_a_missing_form_type_filter_nothing() -> None:
    parsed = query(form(("with", []), ("start", [""]), form_type=False)).query
    assert parsed == ArchiveQuery(limit=50)


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        (form(kind="form"), "bad-request"),
        (form() + form(), "bad-request"),
        (
            f"<x xmlns='{DATA_FORMS}' type='submit'>"
            "<field var='FORM_TYPE'><value>x</value></field></x>",
            "bad-request",
        ),
        (form(("with", ["a@b", "c@d"])), "bad-request"),
        (form(("with", ["@nodomain"])), "bad-request"),
        (form(("end", ["2010-07-10"])), "bad-request"),
        (form(("ids", [f"i{n}" for n in range(51)])), "bad-request"),
        (form(("include-groupchat", ["true"])), "feature-not-implemented"),
        (f"<set xmlns='{RSM}'><max>1.5</max></set>", "bad-request"),
        (f"<set xmlns='{RSM}'><index>0</index></set>", "feature-not-implemented"),
    ],
)
def test_malformed_queries(inner: str, expected: str) -> None:
    assert condition(inner) == expected


def test_the_query_form_is_a_valid_data_form() -> None:
    x = query_form().find("x", DATA_FORMS)
    assert x is not None
    parsed = parse_form(x)
    assert parsed.type == "form"
    assert parsed.form_type == MAM
    assert [f.var for f in parsed.fields][1:] == [
        "with",
        "start",
        "end",
        "before-id",
        "after-id",
        "ids",
    ]


# -- preferences ----------------------------------------------------------------------------------


def test_prefs_are_read_normalised_without_duplicates_and_written_back() -> None:
    element = parse_element(
        f"<prefs xmlns='{MAM}' default='roster'>"
        "<always><jid>Bob@LocalHost</jid><jid>bob@localhost</jid></always>"
        "<never><jid>carol@localhost/Phone</jid></never></prefs>"
    )
    prefs = parse_prefs(element)
    assert prefs == ArchivePrefs("roster", ("bob@localhost",), ("carol@localhost/Phone",))
    assert parse_prefs(prefs_element(prefs)) == prefs


def test_prefs_need_a_known_default() -> None:
    for default in ("", "default='sometimes'"):
        with pytest.raises(StanzaError) as caught:
            parse_prefs(parse_element(f"<prefs xmlns='{MAM}' {default}/>"))
        assert caught.value.condition == "bad-request"


# -- data forms and RSM ---------------------------------------------------------------------------


def test_a_form_round_trips() -> None:
    built = Form("submit", [Field("FORM_TYPE", "hidden", ["urn:x"]), Field("a", None, ["1", "2"])])
    parsed = parse_form(parse_element(built.to_element().to_str()))
    assert parsed.type == "submit"
    assert parsed.form_type == "urn:x"
    assert parsed.get("a") == Field("a", None, ["1", "2"])
    with pytest.raises(FormError):
        parsed.value("a")  # two values where one is expected
    assert parsed.value("missing") is None


@pytest.mark.parametrize(
    "fields",
    [
        "<field var='a'/><field var='a'/>",
        "<field><value>no var</value></field>",
        "<field var='a' type='colour'/>",
    ],
)
def test_malformed_forms(fields: str) -> None:
    with pytest.raises(FormError):
        parse_form(parse_element(f"<x xmlns='{DATA_FORMS}' type='submit'>{fields}</x>"))


def test_a_fixed_field_needs_no_var() -> None:
    element = parse_element(f"<x xmlns='{DATA_FORMS}' type='form'><field type='fixed'/></x>")
    assert parse_form(element).fields == []


def test_rsm_requests() -> None:
    def read(inner: str) -> RSMRequest:
        return parse_request(parse_element(f"<set xmlns='{RSM}'>{inner}</set>"))

    assert read("") == RSMRequest()
    assert read("<max> 7 </max><before/>") == RSMRequest(max=7, before="")
    assert read("<after>x</after><index>3</index>") == RSMRequest(after="x", index=3)
    for bad in ("<max/>", "<max>-1</max>", "<max>²</max>", "<after/>", "<max>1</max><max>2</max>"):
        with pytest.raises(RSMError):
            read(bad)


def test_rsm_result_sets() -> None:
    assert result_set("a", "b", 3, 0).to_str() == (
        f"<set xmlns='{RSM}'><first index='0'>a</first><last>b</last><count>3</count></set>"
    )
    assert result_set(None, None, None).to_str() == f"<set xmlns='{RSM}'/>"


# -- stored messages ------------------------------------------------------------------------------


def stored(n: int, stanza: str) -> ArchivedMessage:
    return ArchivedMessage(f"id{n}", 1.0, "bob@localhost", "in", stanza)


def test_a_page_of_stored_messages_is_read_back() -> None:
    page = [stored(n, f"<message to='a@b'><body>{n} &amp; more</body></message>") for n in range(3)]
    parsed = parse_stored(page)
    assert [m.find_text("body") for m in parsed] == ["0 & more", "1 & more", "2 & more"]
    assert all(m.xmlns == "jabber:client" for m in parsed)


def test_an_unreadable_stored_message_does_not_spoil_the_page() -> None:
    page = [stored(0, "<message><body>ok</body></message>"), stored(1, "<message><body>")]
    page.append(stored(2, "<message><body>fine</body></message>"))
    parsed = parse_stored(page)
    assert [m.find_text("body") for m in parsed] == ["ok", None, "fine"]
