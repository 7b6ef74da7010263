"""The SDK's uploads and downloads against the real API app (served on loopback) and S3 (moto over HTTP):
a presigned POST streamed from disk, a multipart plan for a large file, and the files coming back whole."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from jobgate.api.app import create_app
from jobgate.client import AsyncClient, Client, UploadFailed
from jobgate.commandsets.manifest import load_manifest_registry
from jobgate.settings import Settings
from jobgate.wiring import ApiServices

from tests.support.aws import create_resources
from tests.support.strict import StrictAws, as_function

KEY = "client-transfer-test-key-0123456789"
MiB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api_url(aws: StrictAws) -> Iterator[str]:
    """The API app on a loopback port, on the local S3 and DynamoDB as ApiFunction's role; files over
    1 MiB go multipart."""
    resources = create_resources()
    settings = Settings(
        table_name=resources.table_name,
        queue_url=resources.queue_url,
        bucket_name=resources.bucket_name,
        api_key=KEY,
        rate_limit_per_s=0,
        upload_max_bytes=MiB,
        multipart_part_bytes=5 * MiB,
    )
    with as_function("api"):  # every AWS call of the test, the served API's included, is ApiFunction's
        app = create_app(ApiServices(settings, load_manifest_registry()))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.config.port}"
        server.should_exit = True
        thread.join(10)


def test_a_small_file_goes_up_by_presigned_post_and_comes_back_identical(
    api_url: str, npy_file: Path, tmp_path: Path
) -> None:
    progress: list[tuple[int, int]] = []
    with Client(api_url, KEY) as client:
        asset = client.upload(npy_file, progress=lambda done, total: progress.append((done, total)))
        assert (asset.status, asset.filename, asset.media_type) == (
            "AVAILABLE",
            "field.npy",
            "application/x-npy",
        )
        assert asset.size == npy_file.stat().st_size
        assert progress[-1] == (asset.size, asset.size)
        back = client.download_asset(asset.asset_id, f"{tmp_path}/back/")  # a folder, to be made
    assert back == tmp_path / "back" / "field.npy"
    assert back.read_bytes() == npy_file.read_bytes()


def test_a_large_file_goes_up_in_parts_and_comes_back_identical(api_url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 * MiB + 123))
    progress: list[int] = []
    with Client(api_url, KEY) as client:
        asset = client.upload(big, progress=lambda done, total: progress.append(done))
        assert asset.status == "AVAILABLE" and asset.size == 6 * MiB + 123
        assert progress == sorted(progress) and progress[-1] == asset.size
        back = client.download_asset(asset.asset_id, tmp_path / "copy.bin")
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()


def test_the_async_client_moves_both_kinds_of_upload(api_url: str, npy_file: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * MiB + 1))

    async def scenario() -> tuple[bytes, bytes]:
        async with AsyncClient(api_url, KEY) as client:
            small = await client.upload(npy_file)
            large = await client.upload(big)
            a = await client.download_asset(small.asset_id, tmp_path / "a.npy")
            b = await client.download_asset(large.asset_id, tmp_path / "b.bin")
            return a.read_bytes(), b.read_bytes()

    small_back, large_back = asyncio.run(scenario())
    assert small_back == npy_file.read_bytes()
    assert large_back == big.read_bytes()


def test_a_file_whose_content_contradicts_its_media_type_is_refused(api_url: str, tmp_path: Path) -> None:
    fake = tmp_path / "field.npy"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a PNG, declared as .npy
    with (
        Client(api_url, KEY) as client,
        pytest.raises(UploadFailed, match="declared application/x-npy, but the content is image/png"),
    ):
        client.upload(fake, media_type="application/x-npy")
