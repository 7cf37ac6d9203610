"""moldudp64 inspect on damaged, hostile and unusual captures (and listen --capture's
files): everything intact is reported, every problem is one clear line with its exit code,
never an internal error."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_helpers import (
    anonymised_itch_capture,
    ethernet,
    ipv4_udp,
    ipv6_frame,
    mutated_capture,
    pcap_bytes,
    pcapng_bytes,
)
from cli_helpers import assert_one_line_error, jsonl, run
from moldudp64 import cli
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.cli.common import _format_ranges
from moldudp64.cli.inspect import _Inspector, _summarise_capture
from moldudp64.cli.sinks import JsonlSink
from moldudp64.wire import build_packet

SESSION = "TESTSESS01"
FEED = ("239.5.5.5", 31000)


def msgs(first: int, n: int) -> list[bytes]:
    """Distinct messages for sequence numbers first..first+n-1."""
    return [b"A" + seq.to_bytes(8, "big") + bytes(seq % 7) for seq in range(first, first + n)]


def session_frames(packets: int, per_packet: int = 9) -> list[bytes]:
    """Ethernet frames of one session, ``per_packet`` messages a packet, from sequence 1."""
    return [
        ethernet(
            ipv4_udp(
                build_packet(SESSION, 1 + i * per_packet, msgs(1 + i * per_packet, per_packet)),
                dst=FEED,
                ident=i,
            )
        )
        for i in range(packets)
    ]


# -- item 6: a capture cut short ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_capture_cut_by_5_bytes_reports_every_intact_message(fmt: str, tmp_path: Path) -> None:
    """40 packets of 9 messages, the file cut 5 bytes short (tcpdump killed): the 351
    messages of the 39 intact packets are written and reported, then one warning names the
    byte where the damage starts; exit 2 (bad input)."""
    frames = session_frames(40)
    maker = pcap_bytes if fmt == "pcap" else pcapng_bytes
    data = maker(frames)
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(data[:-5])
    intact = len(maker(frames[:39]))
    proc = run("inspect", str(path), "-o", "-", "--format", "jsonl")
    assert proc.returncode == 2
    assert [m["seq"] for m in jsonl(proc.stdout)] == list(range(1, 352))
    err = proc.stderr.decode()
    assert "messages        351 delivered in order" in err  # the report, on stderr with -o -
    warning = err.splitlines()[-1]
    assert warning.startswith("moldudp64 inspect: warning: ")
    assert f"truncated at byte {intact} (file ends inside " in warning
    assert "after 39 packets" in warning
    assert "Traceback" not in err and "internal error" not in err


def test_capture_with_a_corrupt_record_mid_file(tmp_path: Path) -> None:
    """A record length that is a lie part way: the packets before it, then "corrupt at byte"."""
    frames = session_frames(10)
    data = bytearray(pcap_bytes(frames))
    at = len(pcap_bytes(frames[:6]))
    data[at + 8 : at + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    out = tmp_path / "out.bin"
    proc = run("inspect", str(path), "-o", str(out))
    assert proc.returncode == 2
    assert list(iter_binaryfile(out)) == msgs(1, 54)
    assert f"corrupt at byte {at} (corrupt record: captured length 2147483647" in (
        proc.stderr.decode()
    )


def test_pcapng_huge_block_length_exit_2_without_a_giant_allocation(tmp_path: Path) -> None:
    """A 7 KB pcapng whose second block claims about 4 GiB, inspected under a 1 GiB
    address-space limit: the first packet reported, a clear warning, exit 2."""
    frames = session_frames(3)
    data = bytearray(pcapng_bytes(frames))
    at = len(pcapng_bytes(frames[:1]))
    data[at + 4 : at + 8] = (0xFFFFFFF0).to_bytes(4, "little")
    path = tmp_path / "huge.pcapng"
    path.write_bytes(bytes(data) + bytes(7000))
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from moldudp64.cli import main\n"
        f"sys.exit(main(['inspect', {str(path)!r}]))\n"
    )
    done = subprocess.run(
        [__import__("sys").executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "messages        9 delivered in order" in done.stdout
    assert f"corrupt at byte {at} (pcapng block length 4294967280" in done.stderr
    assert "MemoryError" not in done.stderr and "()" not in done.stderr


# -- item 7: an output that is an input -------------------------------------------------------


def test_inspect_refuses_to_write_over_its_capture(tmp_path: Path) -> None:
    """-o naming the capture itself, a symlink to it, or a hard link: refused before
    anything is opened for writing (the capture is untouched); exit 2."""
    path = tmp_path / "s.pcap"
    data = pcap_bytes(session_frames(3))
    path.write_bytes(data)
    (tmp_path / "link.pcap").symlink_to(path)
    os.link(path, tmp_path / "hard.pcap")
    (tmp_path / "dir").symlink_to(tmp_path)
    for output in ("s.pcap", "link.pcap", "hard.pcap", "dir/s.pcap", "./s.pcap"):
        line = assert_one_line_error(run("inspect", str(path), "-o", str(tmp_path / output)))
        assert "same file" in line, output
        assert path.read_bytes() == data
    # stdout appended to the capture: the same refusal (it would read what it writes)
    with open(path, "ab") as out:
        proc = subprocess.run(
            [__import__("sys").executable, "-m", "moldudp64", "inspect", str(path), "-o", "-"],
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 2 and b"same file" in proc.stderr
    assert path.read_bytes() == data


def test_listen_refuses_capture_and_output_on_one_file(tmp_path: Path) -> None:
    """listen --capture X -o X, X not existing yet (or through a symlinked directory):
    refused before any file is created or socket opened; exit 2."""
    (tmp_path / "dir").symlink_to(tmp_path)
    for other in ("same", "dir/same"):
        capture, output = str(tmp_path / "same"), str(tmp_path / other)
        proc = run("listen", "239.1.1.1:30001", "--capture", capture, "-o", output)
        line = assert_one_line_error(proc)
        assert "same file" in line
        assert not (tmp_path / "same").exists()


# -- item 8: IPv6 ESP ---------------------------------------------------------------------------


def test_ipv6_esp_frame_is_skipped_and_counted(tmp_path: Path) -> None:
    esp = ipv6_frame(50, b"\x00\x00\x10\x01" + b"\x00\x00\x00\x07" + bytes(64))
    path = tmp_path / "esp.pcap"
    path.write_bytes(pcap_bytes([esp, *session_frames(2)]))
    proc = run("inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "1 IP packets that are not UDP" in proc.stdout.decode()
    assert "messages        18 delivered in order" in proc.stdout.decode()


# -- item 12: --port and re-request answers from another port ---------------------------------


def test_port_filter_says_when_it_leaves_out_answers(tmp_path: Path) -> None:
    """A listen-style capture: the feed on port 31000 misses 10..18, the answer comes from
    the server's port 31001 to the client's port. Without --port: every message, no gap.
    With --port 31000: the gap, and a warning that MoldUDP64 answers were left out."""
    packets = [build_packet(SESSION, 1 + 9 * i, msgs(1 + 9 * i, 9)) for i in range(4)]
    feed = [ethernet(ipv4_udp(p, dst=FEED, ident=i)) for i, p in enumerate(packets) if i != 1]
    answer = ethernet(ipv4_udp(packets[1], src=("10.0.0.5", 31001), dst=("10.0.0.7", 40000)))
    path = tmp_path / "listen.pcap"
    path.write_bytes(pcap_bytes([*feed[:2], answer, *feed[2:]]))
    proc = run("inspect", str(path), "-o", str(tmp_path / "all.bin"))
    assert proc.returncode == 0, proc.stderr
    assert list(iter_binaryfile(tmp_path / "all.bin")) == msgs(1, 36)

    proc = run("inspect", str(path), "--port", "31000", "-o", str(tmp_path / "port.bin"))
    assert proc.returncode == 3
    assert "1 on other ports" in proc.stdout.decode()
    err = proc.stderr.decode()
    assert "--port 31000 left out 1 MoldUDP64 packets of these sessions on other ports" in err
    assert "inspect without --port to include them" in err


# -- item 13: counting ranges ----------------------------------------------------------------------


def test_more_ranges_counts_what_is_not_listed(tmp_path: Path) -> None:
    """142 gaps: 20 listed, then "(122 more ranges)", in the report and on stderr."""
    packets = [build_packet(SESSION, 1 + 2 * i, msgs(1 + 2 * i, 1)) for i in range(143)]
    path = tmp_path / "gaps.pcap"
    path.write_bytes(pcap_bytes([ethernet(ipv4_udp(p)) for p in packets]))
    proc = run("inspect", str(path))
    assert proc.returncode == 3
    assert "gaps left       142 ranges, 142 messages: 2, 4, " in proc.stdout.decode()
    assert "40, ... (122 more ranges)" in proc.stdout.decode()
    assert "40, ... (122 more ranges)" in proc.stderr.decode()
    assert _format_ranges([(1, 1), (3, 5)], limit=1, total=2) == "1, ... (1 more range)"


# -- item 14: the public anonymised ITCH captures, and --raw ----------------------------------


def test_anonymised_capture_is_reported_not_an_internal_error(tmp_path: Path) -> None:
    """VLAN, 0.0.0.0 -> 0.0.0.0, port 0, a NUL session, sequence 0 in every packet: legal
    input. The ordered report counts the repeats as duplicates; --port 0 selects them."""
    messages = [b"S" + bytes(11), b"A" * 36, b"D" * 19, b"A" * 36]
    path = tmp_path / "anon.pcap"
    path.write_bytes(anonymised_itch_capture(messages))
    for extra in ([], ["--port", "0"]):
        proc = run("inspect", str(path), *extra)
        out = proc.stdout.decode()
        assert proc.returncode == 0, proc.stderr.decode()
        assert "session '\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'  (0.0.0.0:0)" in out
        assert "first sequence  0\n" in out
        assert "messages        1 delivered in order" in out
        assert "duplicates      3 messages in 3 packets" in out


@pytest.mark.parametrize("fmt", ["jsonl", "text", "binaryfile"])
def test_raw_writes_every_message_in_capture_order(fmt: str, tmp_path: Path) -> None:
    """--raw: every message of every packet as it came, duplicates and all, with its packet's
    session and sequence number, and the frame's timestamp in jsonl and text."""
    messages = [b"S" + bytes(11), b"A" * 36, b"D" * 19, b"A" * 36]
    path = tmp_path / "anon.pcap"
    path.write_bytes(anonymised_itch_capture(messages))
    out = tmp_path / f"raw.{fmt}"
    proc = run("inspect", str(path), "--raw", "-o", str(out), "--format", fmt)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "raw output      4 messages of 4 packets" in proc.stdout.decode()
    if fmt == "jsonl":
        got = jsonl(out.read_bytes())
        assert [bytes.fromhex(str(m["data"])) for m in got] == messages
        assert {(m["session"], m["seq"]) for m in got} == {("\x00" * 10, 0)}
        assert [m["ts"] for m in got] == pytest.approx([1000.0, 1000.001, 1000.002, 1000.003])
    elif fmt == "text":
        lines = out.read_text().splitlines()
        assert [line.split()[:5] for line in lines][:2] == [
            ["1000.000000", "\\x00" * 10, "0", "12", "S"],
            ["1000.001000", "\\x00" * 10, "0", "36", "A"],
        ]
        assert len(lines) == 4
    else:
        assert list(iter_binaryfile(out)) == messages


def test_raw_keeps_capture_order_across_sessions_and_gaps(tmp_path: Path) -> None:
    """Two sessions interleaved, a packet repeated and one out of order: --raw gives exactly
    the packets' messages in file order; without --raw the ordered stream."""
    a = [build_packet(SESSION, 1, msgs(1, 2)), build_packet(SESSION, 5, msgs(5, 1))]
    b = [build_packet("OTHERSESS2", 7, [b"b7"])]
    order = [a[0], b[0], a[1], a[0]]
    path = tmp_path / "mix.pcap"
    path.write_bytes(pcap_bytes([ethernet(ipv4_udp(p)) for p in order]))
    proc = run("inspect", str(path), "--raw", "-o", "-", "--format", "jsonl")
    got = [(m["session"], m["seq"]) for m in jsonl(proc.stdout)]
    assert got == [(SESSION, 1), (SESSION, 2), ("OTHERSESS2", 7), (SESSION, 5), (SESSION, 1),
                   (SESSION, 2)]  # fmt: skip
    assert proc.returncode == 3  # the report is the ordered one: 3..4 missing


def test_raw_on_a_binaryfile_copies_it(tmp_path: Path) -> None:
    path = tmp_path / "feed.bin"
    write_binaryfile(path, msgs(1, 5))
    proc = run("inspect", str(path), "--raw", "-o", "-", "--format", "jsonl")
    assert proc.returncode == 0
    assert [m["seq"] for m in jsonl(proc.stdout)] == [1, 2, 3, 4, 5]


# -- item 17: wording ----------------------------------------------------------------------------


def test_empty_capture_is_not_called_a_binaryfile(tmp_path: Path) -> None:
    (tmp_path / "empty.pcap").write_bytes(b"")
    line = assert_one_line_error(run("inspect", str(tmp_path / "empty.pcap")))
    assert "empty file, not a capture" in line and "BinaryFILE" not in line
    (tmp_path / "empty.bin").write_bytes(b"")
    proc = run("inspect", str(tmp_path / "empty.bin"))
    assert proc.returncode == 0
    assert "a BinaryFILE with no messages" in proc.stdout.decode()


def test_session_not_found_says_what_was_skipped(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    path.write_bytes(pcap_bytes(session_frames(12)))
    proc = run("inspect", str(path), "--session", "NOPE")
    out = proc.stdout.decode()
    assert proc.returncode == 5  # nothing matched the filter, as grep's exit 1
    assert "no packets of session 'NOPE'\n" in out  # as given, without the wire's padding
    assert f"12 packets of 1 other session skipped: '{SESSION}'" in out
    assert "try --port" not in out


def test_a_file_that_is_no_capture_says_so(tmp_path: Path) -> None:
    """Text, an image, source code: not read as a BinaryFILE (which any bytes frame as)."""
    png = tmp_path / "logo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64)
    readme = Path(__file__).resolve().parents[2] / "README.md"
    source = Path(cli.__file__)
    for path in (readme, png, source):
        line = assert_one_line_error(run("inspect", str(path)))
        assert line.endswith(f"{path} is not a pcap, pcapng or BinaryFILE"), line
    line = assert_one_line_error(run("inspect", str(png), "--port", "1"))
    assert "is not a pcap, pcapng or BinaryFILE" in line


def test_a_well_known_file_type_is_named_not_read_as_a_binaryfile(tmp_path: Path) -> None:
    """An executable, a compressed capture, an archive, a PDF: exit 2, saying what it is (a
    compressed one with how to get the capture out), never "truncated message at ..."."""
    import gzip
    import zipfile

    capture = tmp_path / "feed.pcap"
    capture.write_bytes(pcap_bytes([ethernet(ipv4_udp(build_packet(SESSION, 1, [b"a"])))]))
    gz = tmp_path / "feed.pcap.gz"
    gz.write_bytes(gzip.compress(capture.read_bytes()))
    archive = tmp_path / "feed.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(capture, "feed.pcap")
    pdf = tmp_path / "spec.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 64)
    expected = {
        Path("/bin/ls"): "it is an ELF executable",
        gz: "it is a gzip file; gunzip it first",
        archive: "it is a zip archive; unzip it first",
        pdf: "it is a PDF document",
    }
    for path, what in expected.items():
        line = assert_one_line_error(run("inspect", str(path)))
        assert f"{path} is not a pcap, pcapng or BinaryFILE: {what}" in line, line
    # a BinaryFILE cut short in a write is still one: its truncation is what is reported
    cut = tmp_path / "cut.bin"
    write_binaryfile(cut, msgs(1, 20))
    cut.write_bytes(cut.read_bytes()[:-3])
    assert "truncated message" in assert_one_line_error(run("inspect", str(cut)))


def test_filters_that_match_nothing_exit_5(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    path.write_bytes(pcap_bytes(session_frames(3)))
    assert run("inspect", str(path), "--port", "9999").returncode == 5
    nothing = run("inspect", str(path), "--session", "NOPE", "-o", "-", "--format", "jsonl")
    assert nothing.returncode == 5 and nothing.stdout == b""
    assert run("inspect", str(path), "--session", "NOPE").returncode == 5
    assert run("inspect", str(path), "--session", SESSION).returncode == 0
    assert run("inspect", str(path), "--port", str(FEED[1])).returncode == 0


# -- hostile files: mutated corpora through the whole command ---------------------------------


@settings(
    max_examples=150,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated_capture(), raw=st.booleans(), port=st.sampled_from([None, 0, 26477]))
def test_mutated_captures_end_in_a_report_or_a_clear_error(
    data: bytes, raw: bool, port: int | None
) -> None:
    """Any mutation of a real or generated capture: inspect (in process) exits 0, 2, 3 or 5
    (nothing found), never 1 (internal error), and its memory stays bounded (tracemalloc
    peak < 64 MiB)."""
    import tracemalloc

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pcap"
        path.write_bytes(data)
        argv = ["inspect", str(path), "-o", str(Path(tmp) / "out.jsonl")]
        argv += ["--raw"] if raw else []
        argv += ["--port", str(port)] if port is not None else []
        out, err = io.StringIO(), io.StringIO()
        tracemalloc.start()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(argv)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert code in (0, 2, 3, 5), err.getvalue()
    assert "internal error" not in err.getvalue()
    assert peak < 64 << 20


# -- item 11 and 12 live: listen --capture x.pcapng, then inspect it ----------------------------


def test_listen_capture_pcapng_gives_listen_output(multicast: None, tmp_path: Path) -> None:
    """publish --drop into listen --capture x.pcapng: the file is a real pcapng (tshark
    reads it when installed), and inspect on it (no --port) writes exactly what listen -o
    wrote; with --port of the feed it says the answers were left out."""
    from cli_helpers import GROUP, QUICK_END, finish, free_port, start_listen

    port = free_port()
    cap, out = tmp_path / "x.pcapng", tmp_path / "listen.bin"
    listener = start_listen(
        *QUICK_END, f"{GROUP}:{port}", "--request-server", f"127.0.0.1:{port + 1}",
        "-o", str(out), "--capture", str(cap), "--idle-timeout", "20",
    )  # fmt: skip
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "3000",
        "--request-port", str(port + 1), "--drop", "0.1", "--seed", "4",
        "--end-of-session-duration", "0.5",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0 and code == 0, err
    assert cap.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"

    proc = run("inspect", str(cap), "-o", str(tmp_path / "inspect.bin"))
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert (tmp_path / "inspect.bin").read_bytes() == out.read_bytes()
    assert "pcapng" in proc.stdout.decode()

    proc = run("inspect", str(cap), "--port", str(port), "-o", str(tmp_path / "port.bin"))
    assert "MoldUDP64 packets of these sessions on other ports" in proc.stderr.decode()

    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed: the pcapng was not checked with it")
    done = subprocess.run(
        ["tshark", "-r", str(cap), "-d", f"udp.port=={port},moldudp64", "-Y", "moldudp64",
         "-T", "fields", "-e", "moldudp64.sequence"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert len(done.stdout.splitlines()) > 0


def _mold(session: bytes, seq: int, count: int, messages: list[bytes], trailing: bytes) -> bytes:
    """A MoldUDP64-shaped payload whose count may lie and which may carry trailing bytes."""
    blocks = b"".join(len(m).to_bytes(2, "big") + m for m in messages)
    return session + seq.to_bytes(8, "big") + count.to_bytes(2, "big") + blocks + trailing


_PAYLOADS = st.builds(
    _mold,
    st.sampled_from([bytes(10), b"SESSION001", b"SESSION002", bytes(range(10))]),
    st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**63, 2**64 - 1, 2**64 - 2])),
    st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 1, 0xFFFE, 0xFFFF])),
    st.lists(st.binary(max_size=5), max_size=4),
    st.sampled_from([b"", b"x"]),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(
        st.tuples(st.floats(0, 100), _PAYLOADS, st.sampled_from([5000, 6000])), max_size=30
    ),
    raw=st.booleans(),
    port=st.sampled_from([None, 5000]),
)
def test_inspector_takes_any_datagrams(
    items: list[tuple[float, bytes, int]], raw: bool, port: int | None
) -> None:
    """Any sessions (NUL, binary), any sequence numbers (0, 2**64-1), lying counts, trailing
    bytes, time going backwards, two ports: the inspector and its report never raise."""
    from moldudp64.capture import CaptureReader

    sink = JsonlSink(io.BytesIO())  # type: ignore[arg-type]
    inspector = _Inspector(None, sink, port=port, raw=raw)
    inspector.feed([(t, ("10.0.0.1", p), ("239.1.1.1", p), d) for t, d, p in items], None)
    reader = CaptureReader(io.BytesIO(pcap_bytes([])))
    with contextlib.redirect_stderr(io.StringIO()):
        _summarise_capture(io.StringIO(), "x.pcap", reader, inspector)
    assert sum(r.written for r in inspector.sessions.values()) == sink.count


def test_counts_of_one_are_singular(tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    path.write_bytes(pcap_bytes(session_frames(1)))
    out = run("inspect", str(path)).stdout.decode()
    assert ", 1 frame, 1 UDP datagram\n" in out, out
    one = tmp_path / "one.bin"
    write_binaryfile(one, [b"A" * 20])
    assert "bytes, 1 message\n" in run("inspect", str(one)).stdout.decode()


def test_first_seq_on_a_capture_is_refused_not_ignored(tmp_path: Path) -> None:
    """--first-seq labels a BinaryFILE's messages; a capture's packets carry their own."""
    path = tmp_path / "s.pcap"
    path.write_bytes(pcap_bytes(session_frames(3)))
    line = assert_one_line_error(run("inspect", str(path), "--first-seq", "5"))
    assert "is a capture" in line and "--first-seq labels a BinaryFILE's messages" in line
