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
