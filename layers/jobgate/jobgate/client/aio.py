"""The asyncio jobgate client: the same calls as `Client`, awaited.

This module is the one source of both clients: `jobgate.client.sync` is generated from it
(`make client`, infra/generate_sync_client.py) by removing `async` and `await` and renaming the asyncio
names; a test fails when the generated file is not current. Where the two differ beyond that (sleeping,
file reads and writes, WebSocket connections, callbacks), the code calls `_io`: `_async_io` here,
`_sync_io` there.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from jobgate.client import _async_io as _io
from jobgate.client import _core
from jobgate.client._core import CHUNK, ProgressCallback, RetryPolicy
from jobgate.client._watch import SocketRefused, Tracker, log_is_truncated
from jobgate.client.config import resolve_settings
from jobgate.client.errors import (
    JobFailed,
    JobgateClientError,
    NotFound,
    StorageError,
    TransportError,
    UploadFailed,
    WaitTimeout,
    error_from_response,
)
from jobgate.client.models import (
    Asset,
    AssetPage,
    Chunk,
    CommandContract,
    CommandList,
    DryRun,
    EventPage,
    Job,
    JobEvent,
    JobPage,
    Map,
    Output,
    Pipeline,
    PipelinePage,
    RunResult,
    RunStatus,
)
from jobgate.media import guess_media_type

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as Connection

AsyncEventCallback = _io.EventCallback


class AsyncClient:
    """A client of one jobgate API, for asyncio: every call is awaited; `list`, `list_assets` and
    `watch` iterate with `async for`.

    `pathlib.Path` values in a job's args are local files: they are uploaded first and passed as
    `asset://<id>`. Errors are typed (`NotFound`, `ValidationError`, `RateLimited`, ...).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        profile: str | None = None,
        websocket_url: str | None = None,
        timeout: httpx.Timeout | float = _core.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        storage_transport: httpx.AsyncBaseTransport | None = None,
        sleep: _io.Sleep = _io.sleep,
    ) -> None:
        settings = resolve_settings(url=url, api_key=api_key, websocket_url=websocket_url, profile=profile)
        self.url = settings.url
        self.api_key = settings.api_key
        self.websocket_url = settings.websocket_url
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_core.api_headers(self.api_key), timeout=timeout, transport=transport
        )
        # Presigned URLs carry their own authorization: the API key never goes to S3.
        self._storage = httpx.AsyncClient(
            headers={"User-Agent": _core.USER_AGENT},
            timeout=_core.TRANSFER_TIMEOUT,
            transport=storage_transport or transport,
            follow_redirects=True,
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._storage.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- requests ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One API call with retries where safe; an error answer raises its typed exception.

        Redirects are answered, not followed (a 307 to S3 must not carry the API key).
        """
        safe = method in ("GET", "HEAD") if idempotent is None else idempotent
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method, path, params=query, json=json, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                delay = self._retry.delay_after_error(attempt, exc, idempotent=safe)
                if delay is None:
                    raise TransportError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from exc
            else:
                if response.status_code < 400:
                    return response
                delay = self._retry.delay_after_response(attempt, response, idempotent=safe)
                if delay is None:
                    raise error_from_response(response)
            await self._sleep(delay)
            attempt += 1

    async def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = (await self.request("GET", "/health/ready")).json()
        return answer

    # -- commands ---------------------------------------------------------------------------

    async def commands(self, *, contracts: bool = False) -> CommandList:
        """The deployment's commands; with `contracts`, each one's whole contract too (one request)."""
        params = {"contracts": "true"} if contracts else None
        return CommandList.model_validate((await self.request("GET", "/v1/commands", params=params)).json())

    async def command(self, stage: str, command: str) -> CommandContract:
        answer = await self.request("GET", f"/v1/commands/{stage}/{command}")
        return CommandContract.model_validate(answer.json())

    # -- jobs -------------------------------------------------------------------------------

    async def submit(
        self,
        stage: str,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        timeout_s: int | None = None,
        wait_s: float | None = None,
        upload_progress: Callable[[Path, int, int], None] | None = None,
    ) -> Job:
        """Queue a job (202); with `wait_s`, the API holds the answer up to that long (at most 25 s).

        With a `run_id` the submission is retried on failures: the API answers the same job.
        """
        args = await self._upload_paths(args or {}, upload_progress)
        body = _core.submit_body(
            stage,
            command,
            args,
            run_id=run_id,
            timeout_s=timeout_s,
            mode="sync" if wait_s is not None else "async",
            wait_s=wait_s,
        )
        response = await self.request("POST", "/v1/jobs", json=body, idempotent=run_id is not None)
        return Job.model_validate(response.json())

    async def dry_run(
        self,
        stage: str,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        timeout_s: int | None = None,
    ) -> DryRun:
        args = await self._upload_paths(args or {}, None)
        body = _core.submit_body(
            stage, command, args, run_id=run_id, timeout_s=timeout_s, mode="async", wait_s=None
        )
        body["dry_run"] = True
        return DryRun.model_validate(
            (await self.request("POST", "/v1/jobs", json=body, idempotent=True)).json()
        )

    async def run(
        self,
        stage: str,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        timeout_s: int | None = None,
        on_event: AsyncEventCallback | None = None,
        download_to: str | Path | None = None,
        check: bool = False,
        wait_timeout: float | None = None,
        websocket: bool = True,
        poll_interval: float = 1.0,
        upload_progress: Callable[[Path, int, int], None] | None = None,
    ) -> RunResult:
        """Submit, wait for the end, and answer stdout, stderr, the exit code and the outputs.

        A run_id is generated when none is given, so a submission lost on the network is retried
        without starting the job twice. `download_to` saves every output there; `check=True`
        raises JobFailed when the job did not succeed.
        """
        job = await self.submit(
            stage,
            command,
            args,
            run_id=run_id or _core.new_run_id(),
            timeout_s=timeout_s,
            upload_progress=upload_progress,
        )
        if not job.terminal:
            job = await self.wait(
                job.job_id,
                on_event=on_event,
                timeout=wait_timeout,
                websocket=websocket,
                poll_interval=poll_interval,
            )
        result = await self.result(job, download_to=download_to)
        if check and not result.ok:
            raise JobFailed(result)
        return result

    async def wait(
        self,
        job_id: str,
        *,
        on_event: AsyncEventCallback | None = None,
        timeout: float | None = None,
        websocket: bool = True,
        poll_interval: float = 1.0,
    ) -> Job:
        """Follow the job until it ends (WebSocket, else polling); answer the finished job."""
        deadline = _core.Deadline(timeout)
        async for event in self.watch(job_id, websocket=websocket, poll_interval=poll_interval):
            if on_event is not None:
                await _io.call(on_event, event)
            if event.terminal:
                break
            if deadline.passed:
                raise WaitTimeout(f"job {job_id} had not ended after {timeout} s; it goes on")
        return await self.get(job_id)

    async def result(self, job: Job | str, *, download_to: str | Path | None = None) -> RunResult:
        """A job with its whole logs (fetched when the record holds only their tails)."""
        job = await self.get(job) if isinstance(job, str) else job
        stdout = await self.logs(job.job_id, "stdout") if log_is_truncated(job.stdout) else job.stdout
        stderr = await self.logs(job.job_id, "stderr") if log_is_truncated(job.stderr) else job.stderr
        files = (
            await self.download_outputs(job.job_id, download_to)
            if download_to is not None and job.outputs
            else []
        )
        return RunResult(job=job, stdout=stdout, stderr=stderr, files=files)

    async def get(self, job_id: str) -> Job:
        return Job.model_validate((await self.request("GET", f"/v1/jobs/{job_id}")).json())

    async def status(self, job_id: str) -> RunStatus:
        return RunStatus.model_validate((await self.request("GET", f"/v1/jobs/{job_id}/status")).json())

    async def run_status(self, run_id: str) -> RunStatus:
        return RunStatus.model_validate(
            (await self.request("GET", f"/v1/runs/{quote(run_id, safe='')}")).json()
        )

    async def events(self, job_id: str, *, after_seq: int | None = None, wait_s: float = 0.0) -> EventPage:
        params = {"after_seq": after_seq, "wait_s": wait_s}
        return EventPage.model_validate(
            (await self.request("GET", f"/v1/jobs/{job_id}/events", params=params)).json()
        )

    async def retry(self, job_id: str) -> Job:
        return Job.model_validate((await self.request("POST", f"/v1/jobs/{job_id}/retry")).json())

    async def list_page(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> JobPage:
        params = {"status": status, "limit": limit, "cursor": cursor}
        return JobPage.model_validate((await self.request("GET", "/v1/jobs", params=params)).json())

    async def list(
        self, status: str | None = None, *, limit: int | None = None, page_size: int = 100
    ) -> AsyncIterator[Job]:
        """This tenant's jobs, newest first, following every page (up to `limit` jobs)."""
        cursor: str | None = None
        count = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - count))
            page = await self.list_page(status=status, limit=size, cursor=cursor)
            for job in page.items:
                yield job
                count += 1
                if limit is not None and count >= limit:
                    return
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> Job:
        """Cancel: a queued job ends at once, a running one is killed by its worker (Conflict when ended)."""
        return Job.model_validate((await self.request("DELETE", f"/v1/jobs/{job_id}")).json())

    async def logs(self, job_id: str, stream: str = "stdout") -> str:
        """The whole log of a finished job (the tail while it runs)."""
        response = await self.request("GET", f"/v1/jobs/{job_id}/logs", params={"stream": stream})
        if response.is_redirect:
            large = await self._storage_get(response.headers["location"])
            return large.text
        return response.text

    async def outputs(self, job_id: str) -> builtins.list[Output]:
        """Every output of the job (all pages), each with a presigned download URL."""
        outputs: builtins.list[Output] = []
        params: dict[str, Any] = {"limit": _core.OUTPUTS_PAGE}
        while True:
            page = (await self.request("GET", f"/v1/jobs/{job_id}/outputs", params=params)).json()
            outputs.extend(Output.model_validate(item) for item in page["items"])
            if not page.get("next_cursor"):
                return outputs
            params = {"limit": _core.OUTPUTS_PAGE, "cursor": page["next_cursor"]}

    async def read_output(self, job_id: str, name: str) -> bytes:
        response = await self.request("GET", f"/v1/jobs/{job_id}/outputs/{quote(name)}")
        if response.is_redirect:
            return (await self._storage_get(response.headers["location"])).content
        return response.content

    # -- pipelines ---------------------------------------------------------------------------

    async def submit_pipeline(
        self, steps: builtins.list[Mapping[str, Any]] | str | Path, *, run_id: str | None = None
    ) -> Pipeline:
        if isinstance(steps, str | Path):
            text = steps.read_text() if isinstance(steps, Path) else steps
            response = await self.request(
                "POST", "/v1/pipelines", content=text.encode(), headers={"Content-Type": "application/yaml"}
            )
        else:
            body: dict[str, Any] = {"steps": [dict(step) for step in steps]}
            if run_id is not None:
                body["run_id"] = run_id
            response = await self.request("POST", "/v1/pipelines", json=body, idempotent=run_id is not None)
        return Pipeline.model_validate(response.json())

    async def get_pipeline(self, pipeline_id: str) -> Pipeline:
        return Pipeline.model_validate((await self.request("GET", f"/v1/pipelines/{pipeline_id}")).json())

    async def list_pipelines(self, *, limit: int | None = None) -> AsyncIterator[Pipeline]:
        cursor: str | None = None
        count = 0
        while True:
            params = {"limit": 100, "cursor": cursor}
            page = PipelinePage.model_validate(
                (await self.request("GET", "/v1/pipelines", params=params)).json()
            )
            for pipeline in page.items:
                yield pipeline
                count += 1
                if limit is not None and count >= limit:
                    return
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    async def cancel_pipeline(self, pipeline_id: str) -> Pipeline:
        return Pipeline.model_validate((await self.request("DELETE", f"/v1/pipelines/{pipeline_id}")).json())

    async def wait_pipeline(
        self, pipeline_id: str, *, timeout: float | None = None, poll_interval: float = 2.0
    ) -> Pipeline:
        deadline = _core.Deadline(timeout)
        schedule = _core.PollSchedule(poll_interval)
        while True:
            pipeline = await self.get_pipeline(pipeline_id)
            if all(step.job.terminal for step in pipeline.steps):
                return pipeline
            if deadline.passed:
                raise WaitTimeout(f"pipeline {pipeline_id} had not ended after {timeout} s; it goes on")
            await self._sleep(schedule.next())

    # -- maps -------------------------------------------------------------------------------

    async def submit_map(
        self,
        stage: str,
        command: str,
        args: Mapping[str, Any],
        *,
        over: str,
        items: builtins.list[Any] | None = None,
        range_: tuple[int, int] | None = None,
        max_parallel: int | None = None,
        merge: Mapping[str, Any] | None = None,
        concat: str | None = None,
        run_id: str | None = None,
    ) -> Map:
        """Run `command` once per item (`args[over] = item`), or per integer of `range_` ([start, stop))."""
        if (items is None) == (range_ is None):
            raise ValueError("give exactly one of items and range_")
        body: dict[str, Any] = {
            "stage": stage,
            "command": command,
            "args": dict(args),
            "over": over,
            "items": list(items) if items is not None else {"range": list(range_ or ())},
        }
        if max_parallel is not None:
            body["max_parallel"] = max_parallel
        if merge is not None or concat is not None:
            body["merge"] = dict(merge) if merge is not None else {"concat": concat}
        if run_id is not None:
            body["run_id"] = run_id
        response = await self.request("POST", "/v1/maps", json=body, idempotent=run_id is not None)
        return Map.model_validate(response.json())

    async def get_map(self, map_id: str) -> Map:
        return Map.model_validate((await self.request("GET", f"/v1/maps/{map_id}")).json())

    async def map_chunks(self, map_id: str, *, status: str | None = None) -> AsyncIterator[Chunk]:
        """Every chunk of the map (or those in `status`), in chunk order, page by page."""
        cursor: str | None = None
        while True:
            params = {"limit": 100, "cursor": cursor, "status": status}
            page = (await self.request("GET", f"/v1/maps/{map_id}/chunks", params=params)).json()
            for item in page["items"]:
                yield Chunk.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def pause_map(self, map_id: str) -> Map:
        return Map.model_validate((await self.request("POST", f"/v1/maps/{map_id}/pause")).json())

    async def resume_map(self, map_id: str) -> Map:
        return Map.model_validate((await self.request("POST", f"/v1/maps/{map_id}/resume")).json())

    async def cancel_map(self, map_id: str) -> Map:
        return Map.model_validate((await self.request("DELETE", f"/v1/maps/{map_id}")).json())

    async def retry_chunk(self, map_id: str, chunk: int) -> Job:
        answer = (await self.request("POST", f"/v1/maps/{map_id}/chunks/{chunk}/retry")).json()
        return Job.model_validate(answer["job"])

    async def merge_map(self, map_id: str, *, force: bool = False, concat: str | None = None) -> Map:
        body: dict[str, Any] = {"force": force}
        if concat is not None:
            body["concat"] = concat
        return Map.model_validate((await self.request("POST", f"/v1/maps/{map_id}/merge", json=body)).json())

    async def wait_map(self, map_id: str, *, timeout: float | None = None, poll_interval: float = 2.0) -> Map:
        """The map once every chunk and its merge have ended."""
        deadline = _core.Deadline(timeout)
        schedule = _core.PollSchedule(poll_interval)
        while True:
            found = await self.get_map(map_id)
            if found.terminal:
                return found
            if deadline.passed:
                raise WaitTimeout(f"map {map_id} had not ended after {timeout} s; it goes on")
            await self._sleep(schedule.next())

    async def download_map(
        self, map_id: str, dest: str | Path = ".", *, progress: ProgressCallback | None = None
    ) -> Path:
        """The merged file, streamed to `dest`: a folder, or the file to write."""
        response = await self.request("GET", f"/v1/maps/{map_id}/download")
        location = response.headers.get("location")
        if location is None:
            raise JobgateClientError(f"expected a redirect to the file, got {response.status_code}")
        return await self._download_url(location, dest, name=None, progress=progress)

    # -- files ------------------------------------------------------------------------------

    async def download(
        self,
        job_id: str,
        dest: str | Path = ".",
        *,
        name: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """One output (the only one, or `name`), streamed to `dest`: a folder, or the file to write."""
        response = await self.request("GET", f"/v1/jobs/{job_id}/download", params={"name": name})
        location = response.headers.get("location")
        if location is None:
            raise JobgateClientError(f"expected a redirect to the file, got {response.status_code}")
        return await self._download_url(location, dest, name=name, progress=progress)

    async def download_outputs(
        self, job_id: str, dest: str | Path = ".", *, progress: ProgressCallback | None = None
    ) -> builtins.list[Path]:
        """Every output of the job under `dest`, at its relative path (`frames/0001.png`)."""
        root = Path(dest)
        files = []
        for output in await self.outputs(job_id):
            target = _core.safe_join(root, output.name)
            if output.url is None:
                raise JobgateClientError(f"output '{output.name}' has no download URL")
            files.append(await self._stream_to(output.url, target, progress))
        return files

    async def upload(
        self,
        path: str | Path,
        *,
        media_type: str | None = None,
        filename: str | None = None,
        progress: ProgressCallback | None = None,
        settle_timeout: float = 60.0,
        labels: Mapping[str, str] | None = None,
    ) -> Asset:
        """Upload a local file straight to S3 (presigned POST, or a multipart plan for large files).

        Answers the asset once AVAILABLE; its `ref` (`asset://<id>`) names it in a job's args.
        """
        path = Path(path)
        size = path.stat().st_size
        if size == 0:
            raise JobgateClientError(f"{path}: cannot upload an empty file")
        media_type = media_type or guess_media_type(path)
        declared: dict[str, Any] = {"filename": filename or path.name, "media_type": media_type, "size": size}
        if labels:
            declared["labels"] = dict(labels)
        ticket = (await self.request("POST", "/v1/uploads", json=declared)).json()
        plan = ticket["upload"]
        asset_id = str(ticket["asset_id"])
        if plan.get("method") == "POST":
            await self._post_form(plan, path, size, media_type, progress)
            asset = await self._settled(asset_id, settle_timeout)
        elif plan.get("method") == "MULTIPART":
            asset = await self._upload_parts(plan, path, size, progress)
        else:
            raise JobgateClientError(f"unknown upload method {plan.get('method')!r}")
        if asset.status == "FAILED":
            raise UploadFailed(f"{path.name}: the upload was refused: {asset.reason}")
        return asset

    async def get_asset(self, asset_id: str) -> Asset:
        return Asset.model_validate((await self.request("GET", f"/v1/assets/{asset_id}")).json())

    async def list_assets(
        self,
        status: str | None = None,
        *,
        limit: int | None = None,
        label: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Asset]:
        cursor: str | None = None
        count = 0
        labels = [f"{k}:{v}" for k, v in (label or {}).items()] or None
        while True:
            params = {"status": status, "limit": 100, "cursor": cursor, "label": labels}
            page = AssetPage.model_validate((await self.request("GET", "/v1/assets", params=params)).json())
            for asset in page.items:
                yield asset
                count += 1
                if limit is not None and count >= limit:
                    return
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    async def download_asset(
        self, asset_id: str, dest: str | Path = ".", *, progress: ProgressCallback | None = None
    ) -> Path:
        response = await self.request("GET", f"/v1/assets/{asset_id}/download")
        location = response.headers.get("location")
        if location is None:
            raise JobgateClientError(f"expected a redirect to the file, got {response.status_code}")
        return await self._download_url(location, dest, name=None, progress=progress)

    # -- following a job --------------------------------------------------------------------

    async def watch(
        self,
        job_id: str,
        *,
        after_seq: int | None = 0,
        websocket: bool = True,
        poll_interval: float = 1.0,
        idle_s: float = 15.0,
    ) -> AsyncGenerator[JobEvent, None]:
        """The job's events until it ends: a `snapshot`, then `log`, `progress`, `status` events.

        Over the WebSocket (the job's `links.websocket`, or the client's `websocket_url`), from
        `after_seq` (0: every event since the job began; None: from now on). A dropped connection
        is reopened with the last `seq` received, and an event missing between two others is asked
        for again on the connection, so nothing is missed or repeated. When the
        WebSocket cannot be reached, or the job has none, the job is polled every
        `poll_interval` seconds instead. Stopping the iteration leaves the job running.
        """
        job = await self.get(job_id)
        tracker = Tracker(job_id, after_seq)
        url = self.websocket_url or job.links.websocket
        if websocket and url and not job.terminal:
            async for event in self._watch_socket(tracker, url, idle_s):
                yield event
            if tracker.done:
                return
            if tracker.started:  # the socket went away mid-job: go on from where the job is now
                job = await self.get(job_id)
        if not job.terminal:
            async for event in self._watch_events(tracker, job):
                yield event
            if tracker.done:
                return
            job = await self.get(job_id)
        async for event in self._watch_polling(tracker, job, poll_interval):
            yield event

    async def _watch_events(self, tracker: Tracker, job: Job) -> AsyncIterator[JobEvent]:
        for event in tracker.snapshot_of(job):
            yield event
        cursor = tracker.cursor
        while not tracker.done:
            try:
                page = await self.events(job.job_id, after_seq=cursor, wait_s=_core.EVENT_WAIT_S)
            except NotFound:
                return
            for event in tracker.from_events([e.model_dump(exclude_none=True) for e in page.events]):
                yield event
            cursor = page.next_after_seq
            if page.done and not tracker.done:
                return

    async def _watch_socket(self, tracker: Tracker, url: str, idle_s: float) -> AsyncIterator[JobEvent]:
        """Events over the WebSocket; ends without `tracker.done` when the caller should poll."""
        from websockets.exceptions import ConnectionClosed

        failures = 0
        connected = False
        while failures <= self._retry.retries:
            socket = await self._connect(url)
            if socket is None:
                if not connected:
                    return  # unreachable from the start: poll
                failures += 1
                await self._sleep(self._retry.backoff(failures))
                continue
            connected = True
            try:
                async for event in self._stream(socket, tracker, idle_s):
                    failures = 0
                    yield event
                return
            except (ConnectionClosed, OSError):
                failures += 1
                await self._sleep(self._retry.backoff(failures))
            except SocketRefused as refused:
                if refused.code == "not_found":
                    raise NotFound(404, title="Not Found", detail=str(refused)) from None
                if refused.code != "unknown_connection":
                    return
                failures += 1
            finally:
                await socket.close()

    async def _stream(self, socket: Connection, tracker: Tracker, idle_s: float) -> AsyncIterator[JobEvent]:
        """One connection's events, until the job ends or the connection does."""
        await socket.send(tracker.subscribe_message())
        quiet = _core.Quiet(idle_s)
        while not tracker.done:
            try:
                events = tracker.from_socket(await _io.receive(socket, quiet.remaining()))
            except TimeoutError:
                events = []
            replay = tracker.replay_request()
            if replay is not None:  # a seq went missing: ask again from the last one passed on
                await socket.send(replay)
            if events:
                quiet.reset()
            elif quiet.expired:
                events = await self._check_ended(tracker)
                quiet.reset()
            for event in events:
                yield event

    async def _check_ended(self, tracker: Tracker) -> builtins.list[JobEvent]:
        """No event for a while: ask the API, so an end whose events were lost is not waited for."""
        job = await self.get(tracker.job_id)
        return tracker.from_job(job) if job.terminal else []

    async def _connect(self, url: str) -> Connection | None:
        from websockets.exceptions import InvalidHandshake, InvalidURI

        try:
            return await _io.connect(
                _core.websocket_url(url, self.api_key),
                open_timeout=10,
                close_timeout=2,
                user_agent=_core.USER_AGENT,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI):
            return None

    async def _watch_polling(
        self, tracker: Tracker, job: Job, poll_interval: float
    ) -> AsyncIterator[JobEvent]:
        schedule = _core.PollSchedule(poll_interval)
        while True:
            for event in tracker.from_job(job):
                yield event
            if job.terminal:
                return
            await self._sleep(schedule.next())
            job = await self.get(tracker.job_id)

    # -- internals --------------------------------------------------------------------------

    async def _upload_paths(
        self, args: Mapping[str, Any], progress: Callable[[Path, int, int], None] | None
    ) -> dict[str, Any]:
        refs: dict[Path, str] = {}
        for path in _core.local_paths(args):
            report = (lambda done, total, p=path: progress(p, done, total)) if progress else None
            refs[path] = (await self.upload(path, progress=report)).ref
        return _core.replace_paths(args, refs)

    async def _settled(self, asset_id: str, timeout: float) -> Asset:
        """The asset once S3 has the file: reading a PENDING asset checks S3 again."""
        deadline = _core.Deadline(timeout)
        schedule = _core.PollSchedule(1.0)
        while True:
            asset = await self.get_asset(asset_id)
            if asset.status != "PENDING":
                return asset
            if deadline.passed:
                raise UploadFailed(f"asset {asset_id} is still PENDING after {timeout:.0f} s")
            await self._sleep(schedule.next())

    async def _post_form(
        self, plan: dict[str, Any], path: Path, size: int, media_type: str, progress: ProgressCallback | None
    ) -> None:
        form = _core.form_body(plan["fields"], path.name, media_type, size)

        async def body() -> AsyncIterator[bytes]:
            yield form.head
            async for chunk in _read_range(path, 0, size, _core.progress_from(progress, 0, size)):
                yield chunk
            yield form.tail

        headers = {"Content-Type": form.content_type, "Content-Length": str(form.length)}
        await self._storage_send("POST", plan["url"], body, headers)

    async def _upload_parts(
        self, plan: dict[str, Any], path: Path, size: int, progress: ProgressCallback | None
    ) -> Asset:
        part_size = int(plan["part_size"])
        done_before = 0
        completed = []
        for part in plan["parts"]:
            number, length = int(part["part_number"]), int(part["size"])
            offset = (number - 1) * part_size

            def body(
                offset: int = offset, length: int = length, base: int = done_before
            ) -> AsyncIterator[bytes]:
                return _read_range(path, offset, length, _core.progress_from(progress, base, size))

            response = await self._storage_send("PUT", part["url"], body, {"Content-Length": str(length)})
            etag = response.headers.get("etag")
            if not etag:
                raise StorageError(response.status_code, f"part {number} was stored without an ETag")
            completed.append({"part_number": number, "etag": etag})
            done_before += length
        answer = await self.request("POST", plan["complete_url"], json={"parts": completed})
        return Asset.model_validate(answer.json())

    async def _storage_send(
        self, method: str, url: str, body: Callable[[], AsyncIterator[bytes]], headers: dict[str, str]
    ) -> httpx.Response:
        """Send bytes to a presigned URL; the same bytes to the same key can be sent again."""
        attempt = 0
        while True:
            try:
                response = await self._storage.request(method, url, content=body(), headers=headers)
            except httpx.TransportError as exc:
                delay = self._retry.delay_after_error(attempt, exc, idempotent=True)
                if delay is None:
                    raise TransportError(f"upload to storage failed: {exc or type(exc).__name__}") from exc
            else:
                if response.status_code < 300:
                    return response
                delay = self._retry.delay_after_response(attempt, response, idempotent=True)
                if delay is None:
                    raise StorageError(response.status_code, _core.storage_error_message(response))
            await self._sleep(delay)
            attempt += 1

    async def _storage_get(self, url: str) -> httpx.Response:
        response = await self._storage.get(url)
        if response.status_code >= 400:
            raise StorageError(response.status_code, _core.storage_error_message(response))
        return response

    async def _download_url(
        self, url: str, dest: str | Path, *, name: str | None, progress: ProgressCallback | None
    ) -> Path:
        # A folder (existing, or spelled with a trailing slash) gets the file under its own name.
        folder = Path(dest).is_dir() or str(dest).endswith(("/", os.sep))

        def target(response: httpx.Response) -> Path:
            if not folder:
                return Path(dest)
            chosen = name or _core.content_disposition_name(response.headers.get("content-disposition"))
            chosen = chosen or httpx.URL(url).path.rsplit("/", 1)[-1] or "download"
            return _core.safe_join(Path(dest), chosen)

        return await self._stream_to(url, target, progress)

    async def _stream_to(
        self, url: str, target: Path | Callable[[httpx.Response], Path], progress: ProgressCallback | None
    ) -> Path:
        """Stream a presigned GET into a file, written under a temporary name and renamed when whole."""
        attempt = 0
        while True:
            try:
                async with self._storage.stream("GET", url) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        delay = self._retry.delay_after_response(attempt, response, idempotent=True)
                        if delay is None:
                            raise StorageError(response.status_code, _core.storage_error_message(response))
                    else:
                        return await _write_stream(
                            response, target if isinstance(target, Path) else target(response), progress
                        )
            except httpx.TransportError as exc:
                delay = self._retry.delay_after_error(attempt, exc, idempotent=True)
                if delay is None:
                    raise TransportError(f"download failed: {exc or type(exc).__name__}") from exc
            await self._sleep(delay)
            attempt += 1


async def _read_range(
    path: Path, offset: int, length: int, report: Callable[[int], object]
) -> AsyncIterator[bytes]:
    """`length` bytes of a file from `offset`, in chunks; a file that shrank meanwhile is an error."""
    sent = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        while sent < length:
            chunk = await _io.read(fh, min(CHUNK, length - sent))
            if not chunk:
                raise JobgateClientError(f"{path} changed while it was being uploaded")
            sent += len(chunk)
            report(sent)
            yield chunk


async def _write_stream(response: httpx.Response, target: Path, progress: ProgressCallback | None) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _core.temp_sibling(target)
    total = int(response.headers.get("content-length") or 0)
    done = 0
    try:
        with partial.open("wb") as fh:
            async for chunk in response.aiter_bytes(CHUNK):
                await _io.write(fh, chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
