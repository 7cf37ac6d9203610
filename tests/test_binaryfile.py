"""BinaryFILE: streaming reader and writer."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moldudp64.binaryfile import (
    BinaryFileReader,
    BinaryFileWriter,
    iter_binaryfile,
    looks_like_binaryfile,
    write_binaryfile,
)
from moldudp64.exceptions import BinaryFileError, TruncatedFile


def test_write_then_read_a_file(tmp_path: Path) -> None:
    path = tmp_path / "day.NASDAQ_ITCH50"
    assert write_binaryfile(path, [b"S" * 12, b"", b"A" * 36]) == 3
    assert path.read_bytes() == b"\x00\x0c" + b"S" * 12 + b"\x00\x00" + b"\x00\x24" + b"A" * 36
    assert list(iter_binaryfile(path)) == [b"S" * 12, b"", b"A" * 36]


@given(st.lists(st.binary(max_size=70), max_size=50), st.integers(1, 64))
def test_messages_across_chunk_boundaries(messages: list[bytes], chunk: int) -> None:
    stream = io.BytesIO()
    with BinaryFileWriter(stream) as writer:
        writer.write_many(messages)
    stream.seek(0)
    reader = BinaryFileReader(stream, chunk_size=chunk)
    assert list(reader) == messages
    assert reader.count == len(messages)
    assert reader.offset == len(stream.getvalue())


@pytest.mark.parametrize(
    ("tail", "offset"),
    [(b"\x00", 7), (b"\x00\x05ab", 7)],
)
def test_truncated_tail_names_the_byte_offset(tail: bytes, offset: int) -> None:
    data = b"\x00\x05hello" + tail
    reader = BinaryFileReader(io.BytesIO(data), chunk_size=3)
    got = []
    with pytest.raises(TruncatedFile) as info:
        for message in reader:
            got.append(message)
    assert got == [b"hello"]
    assert info.value.offset == offset
    assert f"offset {offset}" in str(info.value)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BinaryFileError, match="cannot open"):
        BinaryFileReader(tmp_path / "missing")
    with pytest.raises(BinaryFileError, match="cannot create"):
        BinaryFileWriter(tmp_path / "no" / "such" / "dir")


def test_looks_like_binaryfile_tells_a_feed_from_text_and_images() -> None:
    feed = b"".join(len(m).to_bytes(2, "big") + m for m in [b"A" * 36, b"E" * 31] * 50)
    assert looks_like_binaryfile(feed, whole=True)
    assert looks_like_binaryfile(feed[:-7], whole=True)  # cut short in a write: still one
    assert looks_like_binaryfile(feed[:1000], whole=False)  # the head of a larger file
    assert looks_like_binaryfile(b"\x00\x00", whole=True)  # one empty message
    text = b"# moldudp64\n\nmoldudp64 is a Python toolkit for NASDAQ's MoldUDP64.\n" * 400
    assert not looks_like_binaryfile(text, whole=True)
    assert not looks_like_binaryfile(text[:5000], whole=False)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    assert not looks_like_binaryfile(png, whole=True)
    assert not looks_like_binaryfile(b"x", whole=True)  # not even a length
