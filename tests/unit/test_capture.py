"""A command's log is kept to its cap: the head and the tail, and one line saying what was cut between."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from jobgate.services.capture import CappedLog

MARKER = re.compile(rb"\n?\[jobgate: (\d+) bytes of this stream were cut here; [^\]]*\]\n")


def write_all(path: Path, limit: int | None, chunks: list[bytes]) -> CappedLog:
    log = CappedLog(path, limit)
    for chunk in chunks:
        log.write(chunk)
    log.close()
    return log


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    out, offset, i = [], 0, 0
    while offset < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[offset : offset + size])
        offset += size
        i += 1
    return out


def numbered_lines(count: int) -> bytes:
    return b"".join(f"line {i:06d}\n".encode() for i in range(count))


def test_without_a_cap_everything_is_kept(tmp_path: Path) -> None:
    data = numbered_lines(5000)
    write_all(tmp_path / "log", None, chunked(data, [7, 4096, 1]))
    assert (tmp_path / "log").read_bytes() == data


def test_output_under_the_cap_is_kept_whole_with_no_marker(tmp_path: Path) -> None:
    data = numbered_lines(100)  # 1200 bytes
    log = write_all(tmp_path / "log", 1200, chunked(data, [13]))
    assert (tmp_path / "log").read_bytes() == data
    assert log.cut == 0 and log.total == 1200


@pytest.mark.parametrize(
    ("sizes", "lines"),
    [([1], 30_000), ([7, 300], 100_000), ([65536], 400_000), ([5_000_000], 400_000)],
    ids=["bytes", "mixed", "64k", "one"],
)
def test_past_the_cap_the_head_and_the_tail_are_kept_around_one_line(
    tmp_path: Path, sizes: list[int], lines: int
) -> None:
    data = numbered_lines(lines)  # up to 4.8 MB
    limit = 100_000
    log = write_all(tmp_path / "log", limit, chunked(data, sizes))

    stored = (tmp_path / "log").read_bytes()
    marker = MARKER.search(stored)
    assert marker is not None
    head, tail = stored[: marker.start()], stored[marker.end() :]
    assert head == data[: limit // 2]
    assert tail == data[-(limit // 2) :]
    cut = len(data) - limit
    assert int(marker.group(1)) == cut == log.cut
    assert log.total == len(data)
    assert len(stored) < limit + 200


def test_the_marker_starts_on_a_line_of_its_own(tmp_path: Path) -> None:
    write_all(tmp_path / "log", 10, [b"abcdefghijklmnopqrstuvwxyz"])
    assert (tmp_path / "log").read_bytes().startswith(b"abcde\n[jobgate: 16 bytes")
    assert (tmp_path / "log").read_bytes().endswith(b"]\nvwxyz")


def test_random_writes_match_the_rule(tmp_path: Path) -> None:
    rng = random.Random(7)
    for case in range(30):
        data = rng.randbytes(rng.randrange(0, 20_000))
        limit = rng.randrange(2, 5_000)
        sizes = [rng.randrange(1, 3000) for _ in range(5)]
        path = tmp_path / f"log{case}"
        write_all(path, limit, chunked(data, sizes))
        stored = path.read_bytes()
        if len(data) <= limit:
            assert stored == data
            continue
        head, tail = limit - limit // 2, limit // 2
        assert stored.startswith(data[:head])
        assert stored.endswith(data[len(data) - tail :])
        assert f" {len(data) - limit} bytes of this stream were cut".encode() in stored


def test_it_appends_to_a_log_that_exists_and_leaves_no_other_file(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"earlier attempt\n")
    write_all(tmp_path / "log", 20, [numbered_lines(50)])
    assert (tmp_path / "log").read_bytes().startswith(b"earlier attempt\nline 00000\n[jobgate: 580 bytes")
    assert [p.name for p in tmp_path.iterdir()] == ["log"]
