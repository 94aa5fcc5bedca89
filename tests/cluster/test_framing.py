"""roost.cluster.framing: the link protocol's frames, handshake and errors, without sockets."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.cluster.framing import (
    FRAME_TYPES,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    App,
    Bye,
    Connection,
    CorruptFrame,
    Frame,
    FrameTooLarge,
    Hello,
    LocalProtocolError,
    Member,
    Members,
    Ping,
    Pong,
    ProtocolError,
    RemoteProtocolError,
    State,
    UnexpectedFrame,
    UnknownFrameType,
    VersionMismatch,
    Welcome,
    encode_message,
)


def hello(
    node: str, version: int = 1, minimum: int | None = 1, caps: tuple[str, ...] = ()
) -> Hello:
    return Hello(node, version, 42, caps, minimum)


def pair(a: Hello | None = None, b: Hello | None = None) -> tuple[Connection, Connection]:
    """Two connections that have exchanged hellos."""
    left = Connection(a or hello("a"))
    right = Connection(b or hello("b"))
    left_hello, right_hello = left.hello(), right.hello()
    right.receive_data(left_hello)
    left.receive_data(right_hello)
    return left, right


def raw_frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def open_connection(max_frame_size: int = 1024) -> Connection:
    """A connection whose peer said hello and that said hello back."""
    connection = Connection(hello("a"), max_frame_size=max_frame_size)
    connection.hello()
    connection.receive_data(Connection(hello("b")).hello())
    assert connection.state is State.OPEN
    return connection


# -- frames round trip --------------------------------------------------------------------------


def test_hellos_exchanged_open_both_sides_with_the_peer_known() -> None:
    left, right = pair()
    assert left.state is State.OPEN
    assert right.state is State.OPEN
    assert left.peer == hello("b")
    assert right.peer == hello("a")
    assert left.version == right.version == 1


def test_every_frame_type_survives_the_wire() -> None:
    left, right = pair()
    frames: list[Frame] = [
        Welcome(),
        Ping(1.5),
        Pong(1.5),
        Members((Member("c", "10.0.0.3", 7400), Member("d", "::1", 7401))),
        App("pg:default", encode_message({"join": ["g", 1]})),
        Bye("node stopping"),
    ]
    data = b"".join(left.send(frame) for frame in frames)
    received = right.receive_data(data)
    assert received[:-2] == frames[:-2]
    app = received[-2]
    assert isinstance(app, App)
    assert app.channel == "pg:default"
    assert msgspec.msgpack.decode(app.message) == {"join": ["g", 1]}
    assert received[-1] == Bye("node stopping")
    assert {type(f).__struct_config__.tag for f in frames} | {"hello"} == FRAME_TYPES


def test_the_format_is_a_big_endian_length_then_a_tagged_msgpack_array() -> None:
    left, _ = pair()
    data = left.send(Ping(2.0))
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert msgspec.msgpack.decode(data[4:]) == ["ping", 2.0]


def test_frames_split_at_every_byte_boundary_decode_the_same() -> None:
    left, _ = pair()
    frames: list[Frame] = [Ping(1.0), App("x", encode_message("é" * 40)), Pong(1.0)]
    data = b"".join(left.send(f) for f in frames)
    expected = [Connection(hello("b")).receive_data(Connection(hello("a")).hello())[0], *frames]
    stream = Connection(hello("a")).hello() + data
    for cut in range(len(stream) + 1):
        receiver = Connection(hello("b"))
        receiver.hello()
        got = receiver.receive_data(stream[:cut]) + receiver.receive_data(stream[cut:])
        assert got == expected, cut
        assert receiver.buffered == 0


def test_frames_fed_one_byte_at_a_time_decode_the_same() -> None:
    receiver = Connection(hello("b"))
    receiver.hello()
    stream = Connection(hello("a")).hello()
    sender = open_connection()
    stream += sender.send(Ping(3.0)) + sender.send(Bye("done"))
    got: list[Frame] = []
    for i in range(len(stream)):
        got += receiver.receive_data(stream[i : i + 1])
    assert got[1:] == [Ping(3.0), Bye("done")]


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_any_chunking_of_the_stream_yields_the_same_frames(cuts: list[int]) -> None:
    sender = open_connection(max_frame_size=1 << 16)
    body = b"".join(sender.send(App(f"c{i}", encode_message(list(range(i))))) for i in range(8))
    stream = Connection(hello("a")).hello() + body
    receiver = Connection(hello("b"))
    receiver.hello()
    points = sorted({min(c * 3, len(stream)) for c in cuts} | {0, len(stream)})
    got: list[Frame] = []
    for start, end in itertools.pairwise(points):
        got += receiver.receive_data(stream[start:end])
    assert [f.channel for f in got if isinstance(f, App)] == [f"c{i}" for i in range(8)]


# -- what the peer may not do -------------------------------------------------------------------


def test_an_oversized_length_is_refused_from_the_header_alone() -> None:
    connection = open_connection(max_frame_size=1024)
    with pytest.raises(FrameTooLarge) as error:
        connection.receive_data((1025).to_bytes(4, "big"))
    assert error.value.size == 1025
    assert "exceeds the limit of 1024" in str(error.value)
    assert connection.state is State.CLOSED
    assert connection.buffered == 0


def test_a_4_gib_length_does_not_wait_for_the_body() -> None:
    connection = open_connection()
    with pytest.raises(FrameTooLarge):
        connection.receive_data(b"\xff\xff\xff\xff")


def test_a_frame_exactly_at_the_limit_is_accepted() -> None:
    sender = open_connection(max_frame_size=1 << 16)
    frame = App("c", encode_message(b"x" * 500))
    data = sender.send(frame)
    receiver = open_connection(max_frame_size=len(data) - 4)
    assert receiver.receive_data(data) == [frame]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xc1", id="invalid-msgpack"),
        pytest.param(b"", id="empty"),
        pytest.param(msgspec.msgpack.encode(["ping"]), id="missing-field"),
        pytest.param(msgspec.msgpack.encode(["ping", "soon"]), id="wrong-field-type"),
        pytest.param(msgspec.msgpack.encode({"type": "ping"}), id="map-not-array"),
        pytest.param(msgspec.msgpack.encode(["ping", 1.0]) + b"\x00", id="trailing-bytes"),
        pytest.param(msgspec.msgpack.encode([7, 1.0]), id="tag-not-a-string"),
        pytest.param(msgspec.msgpack.encode(["app", "c"]), id="app-without-message"),
    ],
)
def test_a_corrupt_payload_is_a_remote_protocol_error(payload: bytes) -> None:
    connection = open_connection()
    with pytest.raises(CorruptFrame) as error:
        connection.receive_data(raw_frame(payload))
    assert isinstance(error.value, RemoteProtocolError)
    assert not isinstance(error.value, msgspec.MsgspecError)
    assert error.value.__cause__ is None
    assert error.value.__suppress_context__
    assert connection.state is State.CLOSED


def test_an_unknown_frame_type_is_named_in_the_error() -> None:
    connection = open_connection()
    with pytest.raises(UnknownFrameType) as error:
        connection.receive_data(raw_frame(msgspec.msgpack.encode(["gossip", 1])))
    assert error.value.frame_type == "gossip"
    assert str(error.value) == "unknown frame type 'gossip'"


def test_data_after_an_error_is_ignored() -> None:
    connection = open_connection()
    with pytest.raises(CorruptFrame):
        connection.receive_data(raw_frame(b"\xc1"))
    assert connection.receive_data(open_connection().send(Ping(1.0))) == []


def test_frames_before_hello_are_unexpected() -> None:
    connection = Connection(hello("a"))
    connection.hello()
    with pytest.raises(UnexpectedFrame, match="ping before hello"):
        connection.receive_data(open_connection().send(Ping(1.0)))


def test_a_second_hello_is_unexpected() -> None:
    connection = open_connection()
    with pytest.raises(UnexpectedFrame, match="second hello"):
        connection.receive_data(Connection(hello("b")).hello())


def test_a_bye_may_come_instead_of_hello() -> None:
    connection = Connection(hello("a"))
    connection.hello()
    refusal = Connection(hello("b")).send(Bye("duplicate link"))
    assert connection.receive_data(refusal) == [Bye("duplicate link")]
    assert connection.state is State.CLOSED


def test_frames_after_a_bye_are_ignored() -> None:
    sender = open_connection()
    data = sender.send(Bye("stopping"))
    receiver = open_connection()
    assert receiver.receive_data(data + open_connection().send(Ping(1.0))) == [Bye("stopping")]


# -- versions and capabilities ------------------------------------------------------------------


def test_a_newer_peer_whose_range_includes_ours_speaks_our_version() -> None:
    ours, theirs = pair(hello("a", 1, 1), hello("b", 3, 1))
    assert ours.version == theirs.version == 1


def test_an_older_peer_is_tolerated_when_we_still_speak_its_version() -> None:
    ours, theirs = pair(hello("a", 3, 1), hello("b", 2, 2))
    assert ours.version == theirs.version == 2


def test_a_peer_without_min_version_speaks_only_its_version() -> None:
    ours, _ = pair(hello("a", 2, 1), hello("b", 1, None))
    assert ours.version == 1


@pytest.mark.parametrize(
    ("ours", "theirs", "message"),
    [
        (hello("a", 1, 1), hello("b", 3, 2), "we speak version 1, 'b' speaks versions 2 to 3"),
        (
            hello("a", 4, 3),
            hello("b", 2, 1),
            "we speak versions 3 to 4, 'b' speaks versions 1 to 2",
        ),
    ],
)
def test_disjoint_versions_are_refused_with_both_ranges(
    ours: Hello, theirs: Hello, message: str
) -> None:
    connection = Connection(ours)
    connection.hello()
    with pytest.raises(VersionMismatch) as error:
        connection.receive_data(Connection(theirs).hello())
    assert str(error.value) == f"no common protocol version: {message}"
    assert connection.state is State.CLOSED


def test_a_version_mismatch_is_found_even_before_we_said_hello() -> None:
    connection = Connection(hello("a", 1, 1))
    with pytest.raises(VersionMismatch):
        connection.receive_data(Connection(hello("b", 2, 2)).hello())


def test_a_hello_with_fields_from_the_future_is_read() -> None:
    future = msgspec.msgpack.encode(["hello", "b", 1, 7, ["x"], 1, {"new": True}, "more"])
    connection = Connection(hello("a"))
    connection.hello()
    assert connection.receive_data(raw_frame(future)) == [Hello("b", 1, 7, ("x",), 1)]
    assert connection.state is State.OPEN


def test_the_link_has_the_capabilities_both_sides_list() -> None:
    ours, theirs = pair(hello("a", caps=("zstd", "route")), hello("b", caps=("route", "x")))
    assert ours.capabilities == theirs.capabilities == {"route"}


def test_this_build_speaks_a_sane_version_range() -> None:
    assert 1 <= MIN_PROTOCOL_VERSION <= PROTOCOL_VERSION


# -- what we may not do -------------------------------------------------------------------------


def test_nothing_but_hello_or_bye_goes_out_before_the_hellos_are_exchanged() -> None:
    connection = Connection(hello("a"))
    with pytest.raises(LocalProtocolError, match="before the hellos"):
        connection.send(Ping(1.0))
    connection.hello()
    with pytest.raises(LocalProtocolError):
        connection.send(App("c", encode_message(1)))
    connection.send(Bye("changed my mind"))
    assert connection.state is State.CLOSED


def test_hello_goes_out_once_and_only_our_own() -> None:
    connection = Connection(hello("a"))
    with pytest.raises(LocalProtocolError, match="own"):
        connection.send(hello("b"))
    connection.hello()
    with pytest.raises(LocalProtocolError, match="twice"):
        connection.hello()


def test_a_bye_may_follow_a_remote_error_to_say_why() -> None:
    connection = open_connection()
    with pytest.raises(CorruptFrame) as error:
        connection.receive_data(raw_frame(b"\xc1"))
    data = connection.send(Bye(f"protocol error: {error.value}"))
    assert data
    with pytest.raises(LocalProtocolError):
        connection.send(Ping(1.0))


def test_an_oversized_outgoing_frame_is_a_local_error() -> None:
    connection = open_connection(max_frame_size=100)
    with pytest.raises(LocalProtocolError, match="exceeds the limit of 100"):
        connection.send(App("c", encode_message(b"x" * 200)))
    assert connection.state is State.OPEN  # nothing was sent; the link is fine


@pytest.mark.parametrize("message", [object(), 2**70, {1j}])
def test_an_unencodable_message_is_a_local_error_not_msgspecs(message: object) -> None:
    with pytest.raises(LocalProtocolError) as error:
        encode_message(message)
    assert isinstance(error.value, ProtocolError)
    assert not isinstance(error.value, (TypeError, OverflowError, msgspec.MsgspecError))


def test_structs_are_messages() -> None:
    class Join(msgspec.Struct, tag="join"):
        group: str
        pids: list[int]

    raw = encode_message(Join("g", [1, 2]))
    assert msgspec.msgpack.decode(raw, type=Join) == Join("g", [1, 2])


def test_max_frame_size_must_fit_the_length_field() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        Connection(hello("a"), max_frame_size=2**32)
