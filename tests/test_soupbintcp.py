"""The SoupBinTCP cores, fed literal bytes on a simulated clock (no sockets, no sleeping)."""

from __future__ import annotations

import pytest

from moldudp64.events import MessagesDelivered, MessagesLost, SessionEnded
from moldudp64.exceptions import EncodeError
from moldudp64.soupbintcp import (
    ConnectionClosed,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    LogoutRequested,
    MalformedFrame,
    SoupClientCore,
    SoupServerCore,
    UnsequencedData,
    build_end_of_snapshot,
    build_login_accepted,
    build_login_rejected,
    build_login_request,
    end_of_snapshot_seq,
    parse_number,
    parse_text,
)

# Frames written from the specification, byte for byte.
LOGIN = (
    b"\x00\x2fL"  # length 47: type + 46
    b"user01"
    b"secret    "
    b"TEST000001"
    b"                   5"
)
ACCEPTED = b"\x00\x1fA" + b"TEST000001" + b"                   5"
ACCEPTED_NASSAU = b"\x00\x1fA" + b"  SESSION1" + b"00000000000000000005"  # right-justified
REJECTED_A = b"\x00\x02JA"
REJECTED_S = b"\x00\x02JS"
HEARTBEAT_SERVER = b"\x00\x01H"
HEARTBEAT_CLIENT = b"\x00\x01R"
END = b"\x00\x01Z"
LOGOUT = b"\x00\x01O"


def seq(message: bytes) -> bytes:
    return len(message + b"S").to_bytes(2, "big") + b"S" + message


def logged_in_client(now: float = 0.0) -> SoupClientCore:
    client = SoupClientCore("user01", "secret", "TEST000001", 5)
    client.connect(now)
    client.consumed(client.output_bytes)
    client.receive(ACCEPTED, now)
    client.events_received()
    return client


# --------------------------------------------------------------------------- fields


def test_builders_write_the_specification_bytes() -> None:
    assert build_login_request("user01", "secret", "TEST000001", 5) == LOGIN
    assert build_login_accepted("TEST000001", 5) == ACCEPTED
    assert build_login_rejected("A") == REJECTED_A
    assert build_login_rejected("S") == REJECTED_S
    assert build_end_of_snapshot(42) == b"G" + b"42".rjust(20)


def test_fields_are_read_whatever_the_padding() -> None:
    assert parse_text(b"SESSION1  ") == parse_text(b"  SESSION1") == "SESSION1"
    assert parse_number(b"                  42") == 42
    assert parse_number(b"00000000000000000042") == 42
    assert parse_number(b"42                  ") == 42
    assert parse_number(b"    ", blank=0) == 0
    with pytest.raises(MalformedFrame):
        parse_number(b"    ")
    with pytest.raises(MalformedFrame):
        parse_number(b"  4x")
    assert end_of_snapshot_seq(b"G" + b"0" * 17 + b"123") == 123
    assert end_of_snapshot_seq(b"G" + b"123".rjust(20)) == 123
    assert end_of_snapshot_seq(b"R" + b"123".rjust(20)) is None


def test_values_that_do_not_fit_are_encode_errors() -> None:
    with pytest.raises(EncodeError):
        build_login_request("toolonguser", "", "", 1)
    with pytest.raises(EncodeError):
        build_login_rejected("X")
    with pytest.raises(EncodeError):
        SoupClientCore(session="ELEVENCHARS")


# --------------------------------------------------------------------------- client


def test_client_logs_in_and_counts_the_messages_from_the_accepted_number() -> None:
    client = SoupClientCore("user01", "secret", "TEST000001", 5)
    client.connect(0.0)
    assert client.outgoing() == LOGIN
    client.consumed(len(LOGIN))
    client.receive(ACCEPTED + seq(b"hello") + seq(b"") + HEARTBEAT_SERVER + seq(b"x"), 0.1)
    events = client.events_received()
    assert events == [
        LoginAccepted("TEST000001", 5),
        MessagesDelivered("TEST000001", 5, [b"hello", b"", b"x"]),  # one batch
    ]
    assert client.next_seq_num == 8
    assert client.stats.heartbeats_received == 1


def test_client_reassembles_packets_split_anywhere() -> None:
    client = logged_in_client()
    stream = seq(b"abc") + HEARTBEAT_SERVER + seq(b"defgh") + END
    got = []
    for i in range(len(stream)):
        client.receive(stream[i : i + 1], 0.1)
        got += client.events_received()
    messages = [m for ev in got if isinstance(ev, MessagesDelivered) for m in ev.messages]
    assert messages == [b"abc", b"defgh"]
    assert got[-2:] == [SessionEnded("TEST000001", 7), ConnectionClosed("end of session")]
    assert client.finished and client.ended


def test_client_accepts_a_right_justified_session_and_zero_padded_number() -> None:
    client = SoupClientCore(seq_num=5)
    client.connect(0.0)
    client.receive(ACCEPTED_NASSAU + seq(b"m"), 0.0)
    assert client.events_received() == [
        LoginAccepted("SESSION1", 5),
        MessagesDelivered("SESSION1", 5, [b"m"]),
    ]


@pytest.mark.parametrize(("frame", "reason"), [(REJECTED_A, "A"), (REJECTED_S, "S")])
def test_client_reports_a_rejection_and_is_finished(frame: bytes, reason: str) -> None:
    client = SoupClientCore()
    client.connect(0.0)
    client.receive(frame, 0.0)
    events = client.events_received()
    assert events[0] == LoginRejected(reason)
    assert isinstance(events[1], ConnectionClosed)
    assert client.rejected == reason and client.finished


def test_client_heartbeats_after_one_second_and_gives_up_after_fifteen_silent() -> None:
    client = logged_in_client()
    assert client.get_timer() == 1.0
    client.handle_timer(1.0)
    assert client.outgoing() == HEARTBEAT_CLIENT
    client.consumed(3)
    now = 1.0
    while client.is_open:
        now = client.get_timer() or now
        client.handle_timer(now)
        client.consumed(client.output_bytes)
    assert now == 15.0
    assert client.events_received() == [ConnectionClosed("peer silent for 15.0 s")]
    assert client.stats.heartbeats_sent == 14


def test_client_resumes_from_the_next_number_on_a_new_connection() -> None:
    client = logged_in_client()
    client.receive(seq(b"a") + seq(b"b"), 0.1)
    client.close("connection reset")
    client.connect(1.0)
    assert client.outgoing() == build_login_request("user01", "secret", "TEST000001", 7)


def test_client_reports_numbers_the_server_no_longer_has() -> None:
    client = SoupClientCore(seq_num=3)
    client.connect(0.0)
    client.receive(build_login_accepted("S1", 10), 0.0)
    assert client.events_received() == [
        LoginAccepted("S1", 10),
        MessagesLost("S1", 3, 9, "not available on the server"),
    ]


def test_client_refuses_an_accept_below_the_number_asked_for_even_on_first_login() -> None:
    client = SoupClientCore(seq_num=5)
    client.connect(0.0)
    client.receive(build_login_accepted("S1", 3) + seq(b"three") + seq(b"four"), 0.0)
    assert client.events_received() == [
        ConnectionClosed("the server accepted at 3, behind the 5 asked for")
    ]
    assert client.next_seq_num == 5  # a reconnect still asks for 5
    assert client.stats.malformed == {"accepted_behind": 1}


def test_client_refuses_another_session_than_the_one_it_named() -> None:
    client = SoupClientCore(session="FOO", seq_num=1)
    client.connect(0.0)
    client.receive(build_login_accepted("BAR", 1) + seq(b"bar's"), 0.0)
    assert client.events_received() == [
        ConnectionClosed("the server accepted session 'BAR', not 'FOO'")
    ]
    blank = SoupClientCore(seq_num=1)  # blank: the server's current session, any name
    blank.connect(0.0)
    blank.receive(build_login_accepted("BAR", 1), 0.0)
    assert blank.events_received() == [LoginAccepted("BAR", 1)]


def test_client_gives_up_on_a_login_answered_with_heartbeats_only() -> None:
    client = SoupClientCore(seq_num=1, timeout=15.0, login_timeout=3.0)
    client.connect(0.0)
    assert client.get_timer() == 3.0
    for t in (1.0, 2.0):
        client.receive(HEARTBEAT_SERVER, t)
        client.handle_timer(t)
    assert client.events_received() == []
    client.receive(HEARTBEAT_SERVER, 3.0)
    client.handle_timer(3.0)
    assert client.events_received() == [ConnectionClosed("no answer to the login within 3 s")]
    assert not client.finished  # a failed connection: the driver may retry
    client.connect(10.0)  # the deadline is per connection
    client.receive(build_login_accepted("S1", 1), 11.0)
    client.handle_timer(14.0)
    assert client.events_received() == [LoginAccepted("S1", 1)]


def test_client_never_numbers_a_message_past_2_64_minus_1() -> None:
    last = 2**64 - 1
    client = SoupClientCore(seq_num=last)
    client.connect(0.0)
    client.receive(build_login_accepted("S1", last) + seq(b"last") + seq(b"over") + END, 0.0)
    assert client.events_received() == [
        LoginAccepted("S1", last),
        MessagesDelivered("S1", last, [b"last"]),
        ConnectionClosed(
            "the server sent 1 message(s) past number 2**64-1 (the end of the number space)"
        ),
    ]
    assert client.finished and not client.ended
    assert client.stats.malformed == {"past_max_seq": 1}


@pytest.mark.parametrize(
    ("stream", "reason", "counted"),
    [
        (
            seq(b"early"),
            "the server sent Sequenced Data before Login Accepted",
            "data_before_login",
        ),
        (END, "the server sent End of Session before Login Accepted", "data_before_login"),
        (b"\x00\x00", "malformed packet: length 0 (the framing is lost)", "zero_length"),
        (b"\x00\x05A1234", "malformed Login Accepted: 4 bytes, not 30", "bad_length"),
        (
            b"\x00\x1fA" + b"S" * 10 + b"x" * 20,
            "malformed Login Accepted: number b'xxxxxxxxxxxxxxxxxxxx' is not digits",
            "bad_number",
        ),
    ],
)
def test_a_hostile_server_closes_the_connection_with_a_reason(
    stream: bytes, reason: str, counted: str
) -> None:
    client = SoupClientCore()
    client.connect(0.0)
    client.receive(stream + ACCEPTED + seq(b"never"), 0.0)
    assert client.events_received() == [ConnectionClosed(reason)]
    assert client.stats.malformed == {counted: 1}
    assert not client.is_open


def test_nothing_after_end_of_session_is_delivered() -> None:
    client = logged_in_client()
    client.receive(seq(b"a") + END + seq(b"after"), 0.1)
    events = client.events_received()
    assert events[0] == MessagesDelivered("TEST000001", 5, [b"a"])
    assert events[1] == SessionEnded("TEST000001", 6)
    assert len(events) == 3


def test_unknown_types_and_debug_are_counted_and_skipped() -> None:
    client = logged_in_client()
    client.receive(b"\x00\x03?xy" + b"\x00\x04+dbg" + seq(b"m") + b"\x00\x01\xff", 0.1)
    assert client.events_received() == [MessagesDelivered("TEST000001", 5, [b"m"])]
    assert client.stats.malformed == {"unknown_type": 2}
    assert client.stats.debug_received == 1


def test_a_65535_length_with_nothing_behind_holds_one_packet_then_times_out() -> None:
    client = logged_in_client()
    client.receive(b"\xff\xffS" + b"x" * 1000, 0.5)
    client.receive(b"x" * 70_000, 1.0)  # completes it, then 5,467 bytes of nonsense
    events = client.events_received()
    assert len(events[0].messages[0]) == 65534  # type: ignore[attr-defined]
    client.handle_timer(16.0)
    assert client.events_received() == [ConnectionClosed("peer silent for 15.0 s")]


def test_unsequenced_data_is_an_event() -> None:
    client = logged_in_client()
    client.receive(b"\x00\x04Uabc", 0.1)
    assert client.events_received() == [UnsequencedData(b"abc")]
    client.send_unsequenced(b"order", 0.2)
    assert client.outgoing() == b"\x00\x06Uorder"


# --------------------------------------------------------------------------- server


def test_server_reads_a_login_and_serves_from_the_accepted_number() -> None:
    server = SoupServerCore()
    server.connected(0.0)
    server.receive(LOGIN, 0.0)
    assert server.events_received() == [LoginRequest("user01", "secret", "TEST000001", 5)]
    server.accept("TEST000001", 5, 0.0)
    server.send_messages([b"hello", b"x"], 0.0)
    server.end_session(0.0)
    assert server.outgoing() == ACCEPTED + seq(b"hello") + seq(b"x") + END
    assert server.next_seq_num == 7


def test_server_reads_both_paddings_and_a_4x_login() -> None:
    server = SoupServerCore()
    server.connected(0.0)
    login_4x = b"\x00\x34L" + b"    u1" + b"  pw" + b" " * 6 + b"  SESSION1" + b"0" * 19 + b"1"
    server.receive(login_4x + b"01500", 0.0)
    assert server.events_received() == [LoginRequest("u1", "pw", "SESSION1", 1)]


def test_server_rejects_and_closes() -> None:
    server = SoupServerCore()
    server.connected(0.0)
    server.receive(LOGIN, 0.0)
    server.reject("A", 0.0)
    assert server.outgoing() == REJECTED_A
    assert not server.is_open


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"\x00\x01O", "packet 'O' before Login Request"),
        (LOGIN + LOGIN, "a second Login Request on one connection"),
        (b"\x00\x05Labcd", "malformed Login Request: 4 bytes, not 46"),
        (b"\x00\x00", "malformed packet: length 0 (the framing is lost)"),
    ],
)
def test_server_closes_a_hostile_client(stream: bytes, reason: str) -> None:
    server = SoupServerCore()
    server.connected(0.0)
    server.receive(stream, 0.0)
    assert server.events_received()[-1] == ConnectionClosed(reason)


def test_server_drops_a_client_that_never_logs_in_or_never_reads() -> None:
    server = SoupServerCore(max_output=100)
    server.connected(0.0)
    for t in range(1, 16):
        server.receive(HEARTBEAT_CLIENT, float(t))  # alive, but never logs in
        server.handle_timer(float(t))
    assert server.events_received() == [ConnectionClosed("no Login Request within 5 s")]

    server.connected(20.0)
    server.receive(LOGIN, 20.0)
    server.accept("TEST000001", 1, 20.0)
    while server.room():
        server.send_messages([b"m" * 10], 20.0)
    assert server.output_bytes <= 100 + 13
    now = 20.0
    while server.is_open:
        now = server.get_timer() or now
        server.receive(HEARTBEAT_CLIENT, now)  # it sends heartbeats but never reads
        server.handle_timer(now)
    closed = server.events_received()[-1]
    assert isinstance(closed, ConnectionClosed)
    assert closed.reason.startswith("client not reading")
    assert now <= 20.0 + 16 + 1


def test_server_heartbeats_only_when_nothing_else_went() -> None:
    server = SoupServerCore()
    server.connected(0.0)
    server.receive(LOGIN, 0.0)
    server.accept("TEST000001", 5, 0.0)
    server.consumed(server.output_bytes)
    server.handle_timer(0.5)
    assert server.outgoing() == b""
    server.handle_timer(1.0)
    assert server.outgoing() == HEARTBEAT_SERVER


def test_server_logout_and_unsequenced() -> None:
    server = SoupServerCore()
    server.connected(0.0)
    server.receive(LOGIN + b"\x00\x03Uhi" + LOGOUT, 0.0)
    events = server.events_received()
    assert events[1:] == [
        UnsequencedData(b"hi"),
        LogoutRequested(),
        ConnectionClosed("logout requested"),
    ]


def test_client_and_server_cores_talk_to_each_other() -> None:
    client = SoupClientCore("u", "p", "", 0)
    server = SoupServerCore()
    client.connect(0.0)
    server.connected(0.0)
    server.receive(client.outgoing(), 0.0)
    login = server.events_received()[0]
    assert isinstance(login, LoginRequest) and login.seq_num == 0 and login.session == ""
    server.accept("S1", 100, 0.0)
    server.send_messages([bytes([i]) * i for i in range(50)], 0.0)
    server.end_session(0.0)
    client.receive(server.outgoing(), 0.0)
    events = client.events_received()
    delivered = [m for ev in events if isinstance(ev, MessagesDelivered) for m in ev.messages]
    assert delivered == [bytes([i]) * i for i in range(50)]
    assert client.next_seq_num == 150 and client.ended


def test_a_length_of_0_inside_a_run_of_data_breaks_the_framing() -> None:
    client = logged_in_client()
    client.receive(seq(b"a") + b"\x00\x00" + b"S" + seq(b"b"), 0.1)
    events = client.events_received()
    assert events == [
        MessagesDelivered("TEST000001", 5, [b"a"]),
        ConnectionClosed("malformed packet: length 0 (the framing is lost)"),
    ]


def test_a_largest_packet_trickled_a_byte_at_a_time_is_gathered_not_recopied() -> None:
    client = logged_in_client()
    packet = b"\xff\xffS" + bytes(range(256)) * 255 + b"x" * 254  # 65,534 bytes of data
    client.receive(packet[:3], 0.1)
    gathering = client._in
    for i in range(3, len(packet) - 1):
        client.receive(packet[i : i + 1], 0.1)
    # One buffer grows (amortised): not a new 64 KiB copy for every byte that arrives.
    assert client._in is gathering and len(gathering) == len(packet) - 1
    client.receive(packet[-1:], 0.1)
    (event,) = client.events_received()
    assert isinstance(event, MessagesDelivered) and event.messages == [packet[3:]]
    assert len(client._in) == 0
