"""Media types come from content first, names second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jobgate.media import guess_media_type


def test_png_by_content_even_with_a_wrong_suffix(tmp_path: Path) -> None:
    path = tmp_path / "image.dat"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16)
    assert guess_media_type(path) == "image/png"


def test_npy_and_netcdf_and_csv(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "b.nc").write_bytes(b"CDF\x01" + b"\x00" * 12)
    (tmp_path / "c.csv").write_text("time,value\n1,2\n")
    assert guess_media_type(tmp_path / "a.npy") == "application/x-npy"
    assert guess_media_type(tmp_path / "b.nc") == "application/x-netcdf"
    assert guess_media_type(tmp_path / "c.csv") == "text/csv"


def test_mp4_by_ftyp_box(tmp_path: Path) -> None:
    path = tmp_path / "video"
    path.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\x00" * 16)
    assert guess_media_type(path) == "video/mp4"


def test_unknown_bytes_are_octet_stream(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"\x01\x02\x03")
    assert guess_media_type(path) == "application/octet-stream"
