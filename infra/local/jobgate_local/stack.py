"""`jobgate dev`: moto, the template's resources, warm function sandboxes and the gateways, on one machine."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from .components import Component, RunningStack
from .functions import ACCOUNT_ID, REGION, FunctionConfig, FunctionPool
from .identities import FunctionIdentity, create_identities
from .moto_server import MotoServer
from .persistence import SavedAws
from .procs import StartupError, reserve_port
from .provision import LOCAL_CREDENTIALS, ProvisionedStack, provision
from .strict import FaultSettings
from .template import (
    STACK_NAME,
    Resolver,
    Template,
    TemplateError,
    function_configs,
    function_name,
    load_template,
)

logger = logging.getLogger(__name__)

API_KEY_PARAMETER = "ApiKey"
CONTAINER_IMAGE_PARAMETER = "ContainerImageUri"


@dataclass
class DevOptions:
    template: Path
    host: str = "127.0.0.1"
    moto_port: int = 0
    parameters: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    state_file: Path | None = None
    # Where the local AWS's data is saved at stop and restored at start (None: nothing is kept).
    state_dir: Path | None = None
    fresh: bool = False
    stack_name: str = STACK_NAME
    init_timeout_s: float = 180.0
    faults: FaultSettings | None = None
    # Set on every function over the template's and the components' (`jobgate dev --env`).
    environment: dict[str, str] = field(default_factory=dict)


def local_aws_environment(endpoint_url: str, credentials: Mapping[str, str] | None = None) -> dict[str, str]:
    """How a function reaches AWS locally: moto's endpoint, its role's credentials (the admin identity's
    when it has no role), and no user config."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        **(credentials or LOCAL_CREDENTIALS),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class DevStack:
    """Starts the parts in order, and stops whatever started, in reverse, however the start ended."""

    def __init__(self, options: DevOptions, components: Sequence[Component]) -> None:
        self.options = options
        self.components = list(components)
        self.template: Template | None = None
        self.provisioned: ProvisionedStack | None = None
        self.pools: dict[str, FunctionPool] = {}
        # Each function's environment as its sandboxes get it: the template's, resolved, then the
        # local AWS endpoint and its role's credentials.
        self.function_environments: dict[str, dict[str, str]] = {}
        self.identities: dict[str, FunctionIdentity] = {}
        self._moto: MotoServer | None = None
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="invoke")
        self._moto_sock: socket.socket | None = None
        self._reserved: list[Component] = []
        self.saved = SavedAws(options.state_dir / "aws") if options.state_dir is not None else None
        # Set once the data is what it should be (restored, or fresh): only then may a stop save it,
        # so a start that failed halfway never overwrites the saved data with an empty stack.
        self._may_save = False

    async def start(self) -> None:
        options = self.options
        hint = "choose another with --moto-port"
        self._moto_sock = reserve_port(options.host, options.moto_port, "moto", hint)
        for component in self.components:
            component.reserve()
            self._reserved.append(component)

        defaults = {API_KEY_PARAMETER: options.api_key} if options.api_key is not None else {}
        # The container runner is on locally: its tasks are local processes (jobgate_local.containers).
        defaults[CONTAINER_IMAGE_PARAMETER] = "jobgate-worker:local"
        template = await asyncio.to_thread(
            partial(load_template, stack_name=options.stack_name, defaults=defaults),
            options.template,
            options.parameters,
        )
        self.template = template

        self._moto = MotoServer(self._moto_sock, faults=options.faults)
        self._moto_sock.close()  # the moto process holds its own copy
        await asyncio.to_thread(self._moto.wait_ready, 30.0)
        provisioned = await asyncio.to_thread(provision, template, self._moto.endpoint_url)
        self.provisioned = provisioned
        logger.info("moto on %s: %s", provisioned.endpoint_url, ", ".join(sorted(provisioned.physical_ids)))
        await asyncio.to_thread(self._restore, provisioned)

        resolver = self._resolver(template, provisioned)
        configs = function_configs(template, resolver)
        self.identities = await asyncio.to_thread(
            create_identities, template, resolver, provisioned.endpoint_url
        )
        await self._start_pools(configs, provisioned.endpoint_url)

        running = RunningStack(template, provisioned, resolver, self.pools, self._executor)
        for component in self.components:
            await component.start(running)

    def _restore(self, provisioned: ProvisionedStack) -> None:
        if self.saved is None:
            return
        if self.options.fresh:
            self.saved.forget()
            logger.info("starting empty (--fresh): the saved data is gone")
        elif self.saved.exists():
            counts = self.saved.restore(
                provisioned.endpoint_url, provisioned.physical_ids, provisioned.resource_types
            )
            logger.info("restored from %s: %s", self.saved.folder, counts)
        self._may_save = True

    def _save(self) -> None:
        if self.saved is None or not self._may_save or self.provisioned is None:
            return
        provisioned = self.provisioned
        counts = self.saved.save(
            provisioned.endpoint_url, provisioned.physical_ids, provisioned.resource_types
        )
        logger.info("saved to %s: %s (`jobgate dev --fresh` starts empty)", self.saved.folder, counts)

    def _resolver(self, template: Template, provisioned: ProvisionedStack) -> Resolver:
        refs = dict(provisioned.physical_ids)
        attributes = dict(provisioned.attributes)
        for logical_id in template.logical_ids("AWS::Lambda::Function"):
            name = function_name(template, logical_id)
            refs[logical_id] = name
            attributes[(logical_id, "Arn")] = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
        for component in self.components:
            for logical_id, values in component.played_resources(template).items():
                if "Ref" in values:
                    refs[logical_id] = values["Ref"]
                attributes.update(
                    {(logical_id, name): value for name, value in values.items() if name != "Ref"}
                )
        parameters = {**template.pseudo_parameters(), **template.parameters}
        declared = {lid: res["Type"] for lid, res in template.resources.items()}
        return Resolver(parameters, refs, attributes, declared, template.conditions)

    async def _start_pools(self, configs: Mapping[str, FunctionConfig], endpoint_url: str) -> None:
        assert self.template is not None
        sizes: dict[str, int] = {}
        for component in self.components:
            for function, count in component.sandboxes(self.template).items():
                sizes[function] = max(sizes.get(function, 0), count)
        extra_environment: dict[str, str] = {}
        for component in self.components:
            extra_environment.update(component.function_environment())
        extra_environment.update(self.options.environment)
        for logical_id, config in configs.items():
            if extra_environment:
                config = replace(config, environment={**config.environment, **extra_environment})
            identity = self.identities.get(logical_id)
            aws_env = local_aws_environment(endpoint_url, identity.environment if identity else None)
            self.function_environments[logical_id] = {**config.environment, **aws_env}
            try:
                pool = FunctionPool(config, sizes.get(logical_id, 1), aws_env=aws_env)
            except FileNotFoundError as exc:
                raise StartupError(str(exc)) from exc
            pool.start()
            self.pools[logical_id] = pool
        outcomes = await asyncio.gather(
            *(asyncio.to_thread(pool.wait_ready, self.options.init_timeout_s) for pool in self.pools.values())
        )
        for pool, outcome in zip(self.pools.values(), outcomes, strict=True):
            failed = {label: error for label, error in outcome.items() if error is not None}
            state = "FAILED cold start (see above); retried on each invoke" if failed else "warm"
            logger.info(
                "%s: %d sandbox%s %s",
                pool.config.logical_id,
                pool.size,
                "" if pool.size == 1 else "es",
                state,
            )

    async def stop(self) -> None:
        """Stop in reverse: gateways and pollers first, then the sandboxes, then moto; safe at any point."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            *((component.name, component.stop) for component in reversed(self._reserved)),
            ("sandboxes", self._stop_pools),
            ("saving the local AWS's data", partial(asyncio.to_thread, self._save)),
            ("moto", self._stop_moto),
        ]
        for name, step in steps:
            started = time.monotonic()
            try:
                await step()
            except Exception:
                logger.exception("while stopping %s", name)
            logger.debug("stopped %s in %.2f s", name, time.monotonic() - started)
        self._reserved.clear()
        if self._moto_sock is not None:
            self._moto_sock.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _stop_pools(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(pool.stop) for pool in self.pools.values()))

    async def _stop_moto(self) -> None:
        if self._moto is not None:
            await asyncio.to_thread(self._moto.stop)

    # -- what users see --------------------------------------------------------------------------

    def urls(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        for component in self.components:
            urls.update(component.urls())
        return urls

    def state(self) -> dict[str, Any]:
        assert self.provisioned is not None and self.template is not None
        return {
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **self.urls(),
            "api_key": self.template.parameters.get(API_KEY_PARAMETER),
            "aws_endpoint_url": self.provisioned.endpoint_url,
            "region": REGION,
            # The stack's admin identity, allowed everything (the functions have their own roles).
            "aws_access_key_id": LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "aws_session_token": LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
            "stack_name": self.provisioned.stack_name,
            "template": str(self.template.path),
            "resources": self.provisioned.physical_ids,
            "functions": {
                lid: {
                    "name": pool.config.function_name,
                    "code_dir": str(pool.config.code_dir),
                    "handler": pool.config.handler,
                    "timeout_s": pool.config.timeout_s,
                    "memory_mb": pool.config.memory_mb,
                    "sandboxes": pool.size,
                    "pids": pool.pids(),
                    "role": self.identities[lid].role_name if lid in self.identities else None,
                }
                for lid, pool in self.pools.items()
            },
            "moto_pid": self._moto.pid if self._moto is not None else None,
            "faults": self.options.faults.to_json() if self.options.faults else None,
            "env_vars_file": str(env_vars_file(self.options.state_file)) if self.options.state_file else None,
        }

    def banner(self) -> str:
        assert self.provisioned is not None and self.template is not None
        urls = self.urls()
        rows = [
            ("HTTP API", urls.get("http_url")),
            ("API docs", urls.get("docs_url")),
            ("console", urls.get("console_url")),
        ]
        rows += [
            (name.removesuffix("_url").replace("_", " "), url)
            for name, url in urls.items()
            if name not in ("http_url", "docs_url", "console_url")
        ]
        rows.append(("AWS (moto)", self.provisioned.endpoint_url))
        faults = self.options.faults
        if faults is not None and faults.rate > 0:
            kinds = ",".join(faults.kinds)
            rows.append(("faults", f"{faults.rate:.0%} of the functions' AWS calls ({kinds})"))
        key = self.template.parameters.get(API_KEY_PARAMETER)
        if key:
            rows.append(("API key", f"{key}   (send it as X-API-Key)"))
        if self.options.state_file is not None:
            rows.append(("state", str(self.options.state_file)))
        if key and urls.get("http_url"):
            rows.append(("try", f'curl -H "X-API-Key: {key}" {urls["http_url"]}/v1/commands'))
        lines = ["", "jobgate dev is running"]
        lines += [f"  {label:<11} {value}" for label, value in rows if value]
        lines += ["Press Ctrl-C to stop.", ""]
        return "\n".join(lines)


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = path.with_suffix(path.suffix + ".tmp")
    pending.write_text(json.dumps(state, indent=2) + "\n")
    pending.chmod(0o600)  # it holds the dev API key and the local AWS's credentials
    pending.replace(path)  # readers never see a half-written file


def env_vars_file(state_file: Path) -> Path:
    """Where `jobgate dev` writes each function's environment, beside its state file."""
    return state_file.with_name("env-vars.json")


async def serve(stack: DevStack) -> int:
    """Run until SIGINT or SIGTERM; 0 after a clean stop, 1 when the stack could not start."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(stack.start())
    stopping = asyncio.create_task(stop.wait())
    code, state_written = 0, False
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # Ctrl-C while starting: stop what has started so far
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        else:
            starting.result()
            if stack.options.state_file is not None:
                # `sam local invoke --env-vars` and `jobgate invoke` read it: written before the state
                # file, which tells the stack is up.
                write_state(env_vars_file(stack.options.state_file), stack.function_environments)
                write_state(stack.options.state_file, stack.state())
                state_written = True
            sys.stdout.write(stack.banner() + "\n")
            sys.stdout.flush()
            await stopping
    except (TemplateError, StartupError) as exc:
        sys.stderr.write(f"jobgate dev: {exc}\n")
        code = 1
    except Exception:
        logger.exception("jobgate dev could not start")
        code = 1
    finally:
        stopping.cancel()
        if code == 0:
            logger.info("stopping")
        await stack.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if state_written and stack.options.state_file is not None:
            stack.options.state_file.unlink(missing_ok=True)
            env_vars_file(stack.options.state_file).unlink(missing_ok=True)
    return code
