"""Tar shards of images in the WebDataset layout: members grouped by key (`dir/sample.jpg`,
`dir/sample.cls`), which is how large image sets travel.

The main process reads only the tar headers and the small label members. Images of an uncompressed
shard are read where they are decoded (a worker process) from their offset in the shard; those of a
compressed shard, which cannot be read out of order, travel with their row.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from galaxymorph.catalog import CatalogRow
from galaxymorph.config import MAX_PIXELS, Preprocessing
from galaxymorph.errors import CatalogError, ImageReadError
from galaxymorph.preprocess.decode import ModelInput, decode_bytes, is_image_file

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
LABEL_EXTENSIONS = ("cls", "txt", "json")
MAX_LABEL_BYTES = 1 << 16


def is_shard_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(SHARD_SUFFIXES)


@dataclass(frozen=True)
class ShardMember:
    """An image member of a tar shard: where it lies in an uncompressed shard, or its bytes."""

    shard: Path
    name: str
    offset: int
    size: int
    data: bytes | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"

    def model_input(self, preprocessing: Preprocessing, max_pixels: int = MAX_PIXELS) -> ModelInput:
        data = self.data
        if data is None:
            try:
                with open(self.shard, "rb") as handle:
                    handle.seek(self.offset)
                    data = handle.read(self.size)
            except OSError as exc:
                raise ImageReadError(self, f"cannot be read from the shard ({exc})") from exc
            if len(data) != self.size:
                raise ImageReadError(self, "the shard ends inside this member (truncated)")
        return decode_bytes(data, str(self), preprocessing, max_pixels=max_pixels)


def iter_shard_rows(path: str | os.PathLike) -> Iterator[CatalogRow]:
    """One row per sample (key) of a tar shard, in shard order; the id is the key, and the label
    members' text (`cls`, `txt`, `json`) become columns. A sample without an image gets its reason;
    a shard that breaks part-way raises `CatalogError` after the samples read before the break."""
    path = Path(path)
    try:
        tar = tarfile.open(path, "r:")
        compressed = False
    except tarfile.ReadError:
        tar, compressed = _open_compressed(path), True
    except OSError as exc:
        raise CatalogError(f"tar shard {path}: cannot be read ({exc})") from exc
    samples = 0
    with tar:
        key, members = None, []
        try:
            for member in tar:
                tar.members = []  # the index of members read so far would grow with the shard
                if not member.isfile():
                    continue
                member_key, extension = _split_key(member.name)
                if member_key != key and members:
                    yield _sample_row(path, key, members)
                    samples += 1
                    members = []
                key = member_key
                members.append((member, extension, _member_bytes(tar, member, extension, compressed)))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CatalogError(f"tar shard {path}: unreadable after {samples} samples ({exc})") from exc
        if members:
            yield _sample_row(path, key, members)


def _open_compressed(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise CatalogError(f"tar shard {path}: not a readable tar file ({exc})") from exc


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name."""
    member = PurePosixPath(name)
    stem, _, extension = member.name.partition(".")
    return str(member.parent / stem) if str(member.parent) != "." else stem, extension.lower()


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, extension: str, compressed: bool) -> bytes | None:
    """Label members are read here; image members only when the shard is compressed."""
    wanted = extension in LABEL_EXTENSIONS and member.size <= MAX_LABEL_BYTES
    if not (wanted or (compressed and is_image_file(member.name))):
        return None
    return tar.extractfile(member).read()


def _sample_row(shard: Path, key: str, members: list) -> CatalogRow:
    columns = {extension: data.decode("utf-8", "replace").strip()
               for _, extension, data in members if extension in LABEL_EXTENSIONS and data is not None}
    image = next(((member, data) for member, _, data in members if is_image_file(member.name)), None)
    if image is None:
        return CatalogRow(key, None, f"tar shard {shard}: sample {key!r} has no image member", columns)
    member, data = image
    return CatalogRow(key, ShardMember(shard, member.name, member.offset_data, member.size, data), columns=columns)
