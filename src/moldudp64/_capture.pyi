def scan(
    data: bytes | bytearray | memoryview,
    pos: int,
    end: int,
    little_endian: bool,
    scale: float,
    port: int,
    max_record: int,
    /,
) -> tuple[int, int, int, bytes | None, list[float], list[bytes]]: ...
