"""A command's output stream kept to a bounded size on disk: its head and its tail, and a line for the cut."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_COPY_CHUNK = 1024 * 1024


class CappedLog:
    """Append one stream of a command to a file, keeping at most ``limit`` bytes of it (None: all).

    The first half of the limit goes to the file as it arrives; past it, the last half is kept in a
    ring on disk (an unlinked temporary file next to the log). ``close`` appends, when bytes were
    dropped, one line saying how many, then the tail. Memory stays constant whatever the command
    prints, and the file never exceeds the limit plus that line.
    """

    def __init__(self, path: Path, limit: int | None) -> None:
        if limit is not None and limit < 2:
            raise ValueError("a log limit keeps a head and a tail: at least 2 bytes")
        self._path = path
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._head_left = None if limit is None else limit - limit // 2
        self._tail_size = 0 if limit is None else limit // 2
        self._ring: int | None = None  # fd of the tail ring, made when the head is full
        self._ring_pos = 0
        self._ring_used = 0
        self._last_head_byte = b"\n"
        self._past_head = 0  # bytes that came after the head was full: in the ring, or dropped
        self.total = 0  # every byte written, kept or not
        self._closed = False

    @property
    def cut(self) -> int:
        """How many bytes were dropped between the head and the tail (so far)."""
        return self._past_head - self._ring_used

    def fileno(self) -> int:
        return self._file.fileno()

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self._head_left is None:
            self._file.write(chunk)
            return
        take = min(self._head_left, len(chunk))
        if take:
            self._file.write(chunk[:take])
            self._last_head_byte = chunk[take - 1 : take]
            self._head_left -= take
        if take < len(chunk):
            self._to_ring(memoryview(chunk)[take:])

    def _to_ring(self, data: memoryview) -> None:
        self._past_head += len(data)
        if self._ring is None:
            self._ring = _anonymous_file(self._path.parent)
        if len(data) >= self._tail_size:
            data = data[len(data) - self._tail_size :]
            self._ring_pos = 0
        first = min(len(data), self._tail_size - self._ring_pos)
        os.pwrite(self._ring, data[:first], self._ring_pos)
        if first < len(data):
            os.pwrite(self._ring, data[first:], 0)
        self._ring_pos = (self._ring_pos + len(data)) % self._tail_size
        self._ring_used = min(self._tail_size, self._ring_used + len(data))

    def close(self) -> None:
        """Finish the file: the line for what was cut, then the tail, in order. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._ring is not None:
                cut = self.cut
                if cut:
                    self._file.write(self._marker(cut))
                # Oldest first: once the ring has wrapped, its oldest byte is at the write position.
                start = self._ring_pos if self._ring_used == self._tail_size else 0
                self._copy_ring(start, self._ring_used - start)
                self._copy_ring(0, start)
        finally:
            if self._ring is not None:
                os.close(self._ring)
            self._file.close()

    def _marker(self, cut: int) -> bytes:
        lead = b"" if self._last_head_byte == b"\n" else b"\n"
        kept_head = self.total - self._past_head
        line = (
            f"[jobgate: {cut} bytes of this stream were cut here; the log keeps its first {kept_head} "
            f"and its last {self._ring_used} of {self.total} bytes]\n"
        )
        return lead + line.encode()

    def _copy_ring(self, offset: int, length: int) -> None:
        assert self._ring is not None
        end = offset + length
        while offset < end:
            data = os.pread(self._ring, min(_COPY_CHUNK, end - offset), offset)
            if not data:
                break
            self._file.write(data)
            offset += len(data)


def _anonymous_file(folder: Path) -> int:
    """An fd to a file no one else can open: unlinked at once, gone when closed or when the process dies."""
    fd, name = tempfile.mkstemp(prefix=".tail-", dir=folder)
    os.unlink(name)
    return fd
