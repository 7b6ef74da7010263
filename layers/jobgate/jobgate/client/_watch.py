"""Following a job: WebSocket messages and polled job states turned into one ordered event stream."""

from __future__ import annotations

import json
from typing import Any

from jobgate.client.models import Job, JobEvent

LOG_TAIL_BYTES = 16 * 1024  # what a job record keeps of each log
# A seq the server cannot send again (its events expired) is given up after this many replays.
MAX_REPLAYS = 3
# Events held back behind a missing one; past this many the gap is given up on.
MAX_HELD = 5000


def log_is_truncated(text: str) -> bool:
    """Whether a job's stdout/stderr is only the tail of a longer log (the whole one is at /logs)."""
    return len(text.encode("utf-8", errors="replace")) >= LOG_TAIL_BYTES - 4


class SocketRefused(Exception):
    """The WebSocket API answered an `error` message (`code`: not_found, unknown_connection, ...)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class Tracker:
    """What a watcher has seen of one job, so that switching between the WebSocket and polling,
    or reconnecting, neither repeats nor skips events.

    The WebSocket numbers a job's events (`seq`); `cursor` is the last one passed on, sent again
    as `after_seq` on reconnect. Events come in order, each seq once: one already passed on is a
    repeat and is dropped; one past `cursor + 1` means one was lost on the way, so it is held back
    and a replay from `cursor` is asked for (`replay_request`) until the missing one arrives.
    Polling has no numbers: log text is told apart by what was seen.
    """

    def __init__(self, job_id: str, after_seq: int | None = 0) -> None:
        self.job_id = job_id
        self.cursor = after_seq
        self.done = False
        self._held: dict[int, dict[str, Any]] = {}  # events after a missing seq, by seq
        self._replays = 0  # asked for at this cursor
        self._replay_asked = False  # and not yet answered (its snapshot has not come)
        self._replay_due = False
        self._snapshot_sent = False
        self._progress = -1.0
        self._status: str | None = None
        self._seen = {"stdout": "", "stderr": ""}
        self._count = {"stdout": 0, "stderr": 0}

    @property
    def started(self) -> bool:
        """Whether anything (the snapshot first) was passed on yet."""
        return self._snapshot_sent

    def subscribe_message(self) -> str:
        message: dict[str, Any] = {"action": "subscribe", "job_id": self.job_id}
        if self.cursor is not None:
            message["after_seq"] = self.cursor
        return json.dumps(message)

    def from_socket(self, raw: str | bytes) -> list[JobEvent]:
        """Events for one WebSocket message; raises SocketRefused for an `error` message."""
        try:
            message = json.loads(raw)
        except ValueError:
            return []
        if not isinstance(message, dict):
            return []
        kind = message.get("type")
        if kind == "error" and message.get("job_id") in (None, self.job_id):
            raise SocketRefused(str(message.get("code", "error")), str(message.get("message", "")))
        if message.get("job_id") != self.job_id:
            return []
        if kind == "snapshot":
            return self._snapshot(message)
        if kind not in ("log", "progress", "status"):
            return []  # unsubscribed, and types a newer server may add
        seq = message.get("seq")
        if not isinstance(seq, int) or self.cursor is None:
            if isinstance(seq, int):
                self.cursor = seq
            return [self._event(message)]
        if seq <= self.cursor:
            return []  # a repeat: sent before a reconnect, or again by a replay
        if seq > self.cursor + 1 and not self._give_up_gap():
            self._held[seq] = message
            self._replay_due = not self._replay_asked
            return []
        self._held[seq] = message
        return self._release()

    def replay_request(self) -> str | None:
        """A subscribe message to send now, asking for the events after `cursor` again; or None."""
        if not self._replay_due:
            return None
        self._replay_due = False
        self._replay_asked = True
        self._replays += 1
        return self.subscribe_message()

    def _give_up_gap(self) -> bool:
        # Replays that came back without the missing seq: the server no longer has it.
        exhausted = self._replays >= MAX_REPLAYS and not self._replay_asked
        return exhausted or len(self._held) >= MAX_HELD

    def _release(self) -> list[JobEvent]:
        """Pass on the held events from the first one on, while they follow each other."""
        assert self.cursor is not None
        events: list[JobEvent] = []
        seq = min(self._held)
        while seq in self._held:
            events.append(self._event(self._held.pop(seq)))
            self.cursor = seq
            seq += 1
        self._replays = 0
        self._replay_due = bool(self._held) and not self._replay_asked
        return events

    def _event(self, message: dict[str, Any]) -> JobEvent:
        return self._note(JobEvent.model_validate({**message, "source": "websocket"}))

    def snapshot_of(self, job: Job) -> list[JobEvent]:
        """The snapshot a watch starts with, made from a job read over HTTP (none if one was passed on)."""
        if self._snapshot_sent:
            return []
        return [self._note(self._snapshot_event(job, seq=None, source="poll"))]

    def from_events(self, messages: list[dict[str, Any]]) -> list[JobEvent]:
        """Events read from the job's numbered log (the HTTP long poll): in order, each passed on once.

        The log answers a contiguous range; a seq missing from it expired, and is not waited for.
        """
        events = []
        for message in messages:
            seq = message.get("seq")
            if not isinstance(seq, int) or (self.cursor is not None and seq <= self.cursor):
                continue
            self.cursor = seq
            events.append(self._note(JobEvent.model_validate({**message, "source": "events"})))
        return events

    def from_job(self, job: Job) -> list[JobEvent]:
        """Events for a polled job state: what changed since the last state or event seen."""
        events: list[JobEvent] = []
        if not self._snapshot_sent:
            events.append(self._note(self._snapshot_event(job, seq=None, source="poll")))
        for stream in ("stdout", "stderr"):
            text = self._new_text(stream, getattr(job, stream))
            if text:
                log = JobEvent(type="log", job_id=job.job_id, stream=stream, text=text, source="poll")
                events.append(self._note(log))
        if job.progress > self._progress:
            progress = JobEvent(type="progress", job_id=job.job_id, progress=job.progress, source="poll")
            events.append(self._note(progress))
        if job.status != self._status and (job.terminal or job.status == "running"):
            status = JobEvent(
                type="status",
                job_id=job.job_id,
                status=job.status,
                exit_code=job.exit_code,
                error=job.error,
                source="poll",
            )
            events.append(self._note(status))
        return events

    def _snapshot(self, message: dict[str, Any]) -> list[JobEvent]:
        job = Job.model_validate(message.get("job") or {})
        seq = int(message.get("seq") or 0)
        self._replay_asked = False  # a subscription (a replay's too) always starts with its snapshot
        # The server replays from after_seq when one was sent; otherwise from now (or, for a
        # finished job, from its last event, the status). Events up to there were not sent.
        if self.cursor is None:
            self.cursor = seq - 1 if job.terminal and seq > 0 else seq
        else:
            self.cursor = min(self.cursor, seq)
        if self._snapshot_sent:
            return []
        return [self._note(self._snapshot_event(job, seq=seq, source="websocket"))]

    def _snapshot_event(self, job: Job, *, seq: int | None, source: str) -> JobEvent:
        return JobEvent.model_validate(
            {
                "type": "snapshot",
                "job_id": job.job_id,
                "seq": seq,
                "job": job,
                "status": job.status,
                "progress": job.progress,
                "exit_code": job.exit_code,
                "error": job.error,
                "source": source,
            }
        )

    def _note(self, event: JobEvent) -> JobEvent:
        if event.type == "snapshot":
            self._snapshot_sent = True
        if event.type == "log" and event.stream in self._seen and event.text:
            self._saw(event.stream, event.text)
        if event.progress is not None and event.type in ("progress", "snapshot"):
            self._progress = max(self._progress, event.progress)
        # A snapshot of a finished job still ends with its status event: watchers wait for that.
        if event.status is not None and (event.type == "status" or not event.terminal_status):
            self._status = event.status
        if event.terminal:
            self.done = True
        return event

    def _saw(self, stream: str, text: str) -> None:
        self._seen[stream] = (self._seen[stream] + text)[-4096:]
        self._count[stream] += len(text)

    def _new_text(self, stream: str, tail: str) -> str:
        if not log_is_truncated(tail):
            # The record holds the whole log so far: what is past the characters seen is new.
            return tail[self._count[stream] :]
        anchor = self._seen[stream][-1024:]
        if not anchor:
            return tail
        at = tail.rfind(anchor)
        return tail[at + len(anchor) :] if at >= 0 else tail
