import struct
import zlib
from pathlib import Path

import pytest

from tools.rcc import FLAG_COMPRESSED, FLAG_DIRECTORY, InvalidResourceFile, ResourceFile

GCOMPRIS_CATEGORIZATION = Path("/usr/share/gcompris-qt/rcc/categorization.rcc")


def write_rcc(tree: dict, version: int = 3, compress: bool = True) -> bytes:
    """A Qt resource file as `rcc -binary` lays it out: header, tree (each directory's children in one run of
    nodes), names table, data table."""
    node_size = 14 if version == 1 else 22
    nodes: list[tuple] = [("dir", "", tree)]
    runs: dict[int, tuple[int, int]] = {}
    position = 0
    while position < len(nodes):
        kind, _, value = nodes[position]
        if kind == "dir":
            runs[position] = (len(value), len(nodes))
            nodes += [("dir" if isinstance(value[name], dict) else "file", name, value[name]) for name in sorted(value)]
        position += 1
    names, payloads, tree_bytes = b"", b"", b""
    for index, (kind, name, value) in enumerate(nodes):
        name_offset = len(names)
        names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
        if kind == "dir":
            count, first = runs[index]
            tree_bytes += struct.pack(">IHII", name_offset, FLAG_DIRECTORY, count, first)
        else:
            data = struct.pack(">I", len(value)) + zlib.compress(value) if compress else value
            tree_bytes += struct.pack(">IHHHI", name_offset, FLAG_COMPRESSED if compress else 0, 0, 0, len(payloads))
            payloads += struct.pack(">I", len(data)) + data
        if version >= 2:
            tree_bytes += struct.pack(">Q", 0)
    assert len(tree_bytes) == node_size * len(nodes)
    tree_offset = 20 if version < 3 else 24
    data_offset = tree_offset + len(tree_bytes)
    header = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, data_offset + len(payloads))
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + tree_bytes + payloads + names


TREE = {"gcompris": {"images": {"fish": {"a.webp": b"first", "b.webp": b"second" * 100}}, "readme.txt": b"hello"}}


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("compress", [True, False])
def test_every_file_comes_back_with_its_path_and_bytes(version, compress):
    files = dict(ResourceFile(write_rcc(TREE, version, compress)).files())
    assert files == {
        "gcompris/images/fish/a.webp": b"first",
        "gcompris/images/fish/b.webp": b"second" * 100,
        "gcompris/readme.txt": b"hello",
    }


def test_a_file_that_is_not_a_resource_file_is_refused():
    with pytest.raises(InvalidResourceFile, match="not a Qt resource file"):
        ResourceFile(b"PK\x03\x04 a zip file, not an rcc")


def test_a_truncated_resource_file_is_refused():
    whole = write_rcc(TREE)
    with pytest.raises(InvalidResourceFile):
        list(ResourceFile(whole[: len(whole) // 2]).files())


def test_an_unknown_format_version_is_refused():
    data = bytearray(write_rcc(TREE))
    data[4:8] = struct.pack(">I", 9)
    with pytest.raises(InvalidResourceFile, match="version 9"):
        ResourceFile(bytes(data))


@pytest.mark.skipif(
    not GCOMPRIS_CATEGORIZATION.is_file(), reason="the Debian package gcompris-qt-data is not installed"
)
def test_gcomprises_own_resource_file_yields_its_pictures():
    import io

    from PIL import Image

    files = dict(ResourceFile.open(GCOMPRIS_CATEGORIZATION).files())
    fish = [name for name in files if "/images/fishes/" in name and name.endswith(".webp")]
    assert len(fish) >= 20
    assert Image.open(io.BytesIO(files[fish[0]])).format == "WEBP"
