"""A reader for Qt's binary resource files (`.rcc`, as `rcc -binary` writes them), formats 1 to 3.

Layout: a 20-byte header ("qres", version, tree offset, data offset, names offset; version 3 adds flags), a tree of
fixed-size nodes (directories list a run of children, files point at data), a names table (UTF-16BE) and a data
table (a 4-byte size, then the bytes; zlib-compressed entries start with their uncompressed size, as qCompress
writes them). Only what reading files needs is implemented.
"""

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

MAGIC = b"qres"
FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04


class InvalidResourceFile(ValueError):
    """The file is not a Qt resource file this reader understands."""


class ResourceFile:
    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        if len(data) < 20 or not data.startswith(MAGIC):
            raise InvalidResourceFile(f"{name} is not a Qt resource file (no 'qres' header)")
        self._data = data
        self._name = name
        self.version, self._tree, self._payloads, self._names = struct.unpack(">IIII", data[4:20])
        if not 1 <= self.version <= 3:
            raise InvalidResourceFile(f"{name}: resource format version {self.version} is not supported")
        # Format 2 added an 8-byte modification time to every node.
        self._node_size = 14 if self.version == 1 else 22

    @classmethod
    def open(cls, path: Path) -> "ResourceFile":
        return cls(Path(path).read_bytes(), str(path))

    def _unpack(self, fmt: str, offset: int) -> tuple:
        size = struct.calcsize(fmt)
        if offset < 0 or offset + size > len(self._data):
            raise InvalidResourceFile(f"{self._name}: truncated at byte {offset}")
        return struct.unpack(fmt, self._data[offset : offset + size])

    def _node_name(self, offset: int) -> str:
        (length,) = self._unpack(">H", self._names + offset)
        start = self._names + offset + 6  # length, then a 4-byte hash, then the characters
        if start + 2 * length > len(self._data):
            raise InvalidResourceFile(f"{self._name}: a name runs past the end of the file")
        return self._data[start : start + 2 * length].decode("utf-16-be")

    def _file_bytes(self, offset: int, flags: int, path: str) -> bytes:
        (size,) = self._unpack(">I", self._payloads + offset)
        start = self._payloads + offset + 4
        if start + size > len(self._data):
            raise InvalidResourceFile(f"{self._name}: {path} runs past the end of the file")
        payload = self._data[start : start + size]
        if flags & FLAG_COMPRESSED_ZSTD:
            raise InvalidResourceFile(f"{self._name}: {path} is zstd-compressed, which this reader does not support")
        if flags & FLAG_COMPRESSED:
            try:
                return zlib.decompress(payload[4:])
            except zlib.error as error:
                raise InvalidResourceFile(f"{self._name}: {path} does not decompress: {error}") from None
        return payload

    def files(self) -> Iterator[tuple[str, bytes]]:
        """Every file as (path without a leading slash, contents), depth first in the file's own order."""
        stack: list[tuple[int, str]] = [(0, "")]
        seen: set[int] = set()
        while stack:
            index, prefix = stack.pop()
            if index in seen:
                raise InvalidResourceFile(f"{self._name}: the resource tree has a cycle")
            seen.add(index)
            node = self._tree + index * self._node_size
            name_offset, flags = self._unpack(">IH", node)
            name = self._node_name(name_offset) if index else ""
            path = f"{prefix}{name}"
            if flags & FLAG_DIRECTORY:
                count, first = self._unpack(">II", node + 6)
                stack.extend((child, f"{path}/" if index else "") for child in reversed(range(first, first + count)))
            else:
                (data_offset,) = self._unpack(">I", node + 10)
                yield path, self._file_bytes(data_offset, flags, path)
