"""The live stream of a job's output: bounded however much, and however oddly, a command prints."""

from __future__ import annotations

from jobgate.models import JobEvent
from jobgate.services.events import MAX_LIVE_LOG_CHARS, JobStream


class Recorder:
    """A publisher that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def publish(self, events: list[JobEvent]) -> list[JobEvent]:
        self.events += events
        return events


def _text(events: list[JobEvent], stream: str) -> str:
    return "".join(e.text or "" for e in events if e.type == "log" and e.stream == stream)


def test_a_line_that_never_ends_is_published_as_it_comes_not_held_until_its_end() -> None:
    recorder = Recorder()
    stream = JobStream("01JOB", recorder, interval_s=0)  # type: ignore[arg-type]
    chunk = b"#" * 65536  # a progress bar drawn with no newline, 4 MiB of it
    for _ in range(64):
        stream.output("stderr", chunk)
    published = len(_text(recorder.events, "stderr"))
    assert published >= 64 * 65536 - 64 * 1024  # all but the last piece is out before any line end
    stream.close()
    assert len(_text(recorder.events, "stderr")) == 64 * 65536


def test_the_live_stream_stops_after_its_limit_with_one_line_saying_where_the_whole_log_is() -> None:
    recorder = Recorder()
    stream = JobStream("01JOB", recorder, interval_s=0)  # type: ignore[arg-type]
    line = b"x" * 1023 + b"\n"
    for _ in range(MAX_LIVE_LOG_CHARS // len(line) * 2):  # twice the limit
        stream.output("stdout", line)
    stream.output("stderr", b"the other stream still flows\n")
    stream.close()
    out = _text(recorder.events, "stdout")
    assert MAX_LIVE_LOG_CHARS - 1024 < len(out) <= MAX_LIVE_LOG_CHARS + 1024
    assert out.endswith("the whole log is at /v1/jobs/01JOB/logs?stream=stdout once the job ends\n")
    assert out.count("[jobgate] the live stdout stops here") == 1
    assert _text(recorder.events, "stderr") == "the other stream still flows\n"
