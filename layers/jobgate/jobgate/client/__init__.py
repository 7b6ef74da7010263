"""The jobgate client: `Client` (sync) and `AsyncClient` (asyncio) over httpx, with typed errors.

    from pathlib import Path
    from jobgate.client import Client

    with Client("https://api.example.com", api_key="...") as jg:
        result = jg.run("visualize", "heatmap",
                        {"input": Path("field.npy"), "output": "map.png", "no_coastline": True},
                        download_to="out")
        print(result.exit_code, result.files)

Without arguments, `Client()` reads JOBGATE_URL / JOBGATE_API_KEY or a profile
(see `jobgate.client.config`).
"""

from jobgate.client._core import RetryPolicy
from jobgate.client.aio import AsyncClient
from jobgate.client.config import ClientSettings, ConfigError, resolve_settings
from jobgate.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    JobFailed,
    JobgateAPIError,
    JobgateClientError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    StorageError,
    TransportError,
    Unauthorized,
    UploadFailed,
    ValidationError,
    WaitTimeout,
)
from jobgate.client.models import (
    Asset,
    Chunk,
    CommandContract,
    CommandList,
    CommandSummary,
    DryRun,
    EventPage,
    Job,
    JobEvent,
    JobPage,
    Map,
    Output,
    Param,
    Pipeline,
    RunResult,
    RunStatus,
)
from jobgate.client.sync import Client

__all__ = [
    "Asset",
    "Chunk",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientSettings",
    "CommandContract",
    "CommandList",
    "CommandSummary",
    "ConfigError",
    "Conflict",
    "DryRun",
    "EventPage",
    "Forbidden",
    "Gone",
    "Job",
    "JobEvent",
    "JobFailed",
    "JobPage",
    "Map",
    "JobgateAPIError",
    "JobgateClientError",
    "NotFound",
    "Output",
    "Param",
    "PayloadTooLarge",
    "Pipeline",
    "RateLimited",
    "RetryPolicy",
    "RunResult",
    "RunStatus",
    "ServerError",
    "ServiceUnavailable",
    "StorageError",
    "TransportError",
    "Unauthorized",
    "UploadFailed",
    "ValidationError",
    "WaitTimeout",
    "resolve_settings",
]
