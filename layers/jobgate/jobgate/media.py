"""Media types of files, by their first bytes where that tells, else by their name."""

from __future__ import annotations

import mimetypes
from pathlib import Path

_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"\x93NUMPY", "application/x-npy"),
    (0, b"CDF\x01", "application/x-netcdf"),
    (0, b"CDF\x02", "application/x-netcdf"),
    (0, b"\x89HDF\r\n\x1a\n", "application/x-netcdf"),
    (0, b"GRIB", "application/x-grib2"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (4, b"ftyp", "video/mp4"),
    (0, b"RIFF", "audio/wav"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"OggS", "audio/ogg"),
]

_BY_SUFFIX = {
    ".npy": "application/x-npy",
    ".nc": "application/x-netcdf",
    ".nc4": "application/x-netcdf",
    ".grib2": "application/x-grib2",
    ".grb2": "application/x-grib2",
    ".csv": "text/csv",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".txt": "text/plain",
    ".log": "text/plain",
    ".mp4": "video/mp4",
}


def sniff_media_type(head: bytes) -> str | None:
    """The media type that a file's first bytes prove, or None when they prove nothing."""
    for offset, magic, media_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if media_type == "audio/wav" and head[8:12] != b"WAVE":
                continue
            return media_type
    return None


def guess_media_type(path: Path) -> str:
    """The file's media type: its magic number first, then its suffix, then octet-stream."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        head = b""
    sniffed = sniff_media_type(head)
    if sniffed:
        return sniffed
    by_suffix = _BY_SUFFIX.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    return by_suffix or "application/octet-stream"


def media_type_for_name(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _BY_SUFFIX.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


_SAME_KIND = [
    {
        "application/x-netcdf",
        "application/netcdf",
        "application/x-netcdf4",
        "application/x-hdf5",
        "application/x-hdf",
    },
    {"application/zip", "application/x-zip-compressed"},
    {"application/gzip", "application/x-gzip"},
    {"audio/wav", "audio/x-wav", "audio/wave"},
    {"video/mp4", "video/quicktime", "audio/mp4"},
    {"application/x-grib2", "application/x-grib", "application/grib"},
]


def same_kind(declared: str, sniffed: str) -> bool:
    """Whether content sniffed as one type may honestly be declared as the other."""
    return declared == sniffed or any(declared in group and sniffed in group for group in _SAME_KIND)
