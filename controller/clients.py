"""Builds the official Google clients, for Google's endpoints or for local emulators.

With an emulator URL, each client uses its REST transport, ``api_endpoint`` at the emulator and anonymous
credentials; nothing in the client libraries is patched. Credentials otherwise come from a prefect-gcp
``GcpCredentials`` block (by name) or Application Default Credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import run_v2
from requests.adapters import HTTPAdapter

# Enough pooled connections for the launch threads plus the watcher, so none waits for a socket.
HTTP_POOL_SIZE = 64


@dataclass(frozen=True)
class Endpoints:
    """Where each API lives: ``None`` means Google's own endpoint."""

    cloud_run: str | None = None
    logging: str | None = None
    storage: str | None = None

    @classmethod
    def from_env(cls) -> Endpoints:
        """``FANOUT_EMULATOR_HOST`` (Cloud Run + Logging) and ``STORAGE_EMULATOR_HOST`` (GCS)."""
        run = os.environ.get("FANOUT_EMULATOR_HOST") or None
        return cls(cloud_run=run, logging=run, storage=os.environ.get("STORAGE_EMULATOR_HOST") or None)


def load_credentials(block_name: str | None) -> Credentials | None:
    """Credentials from a saved prefect-gcp ``GcpCredentials`` block, or None for ADC."""
    if not block_name:
        return None
    from prefect_gcp import GcpCredentials  # prefect-gcp imports are slow; only pay when asked

    block = GcpCredentials.load(block_name)
    credentials: Credentials = block.get_credentials_from_service_account()
    return credentials


@dataclass
class Clients:
    """Lazily built clients sharing one configuration."""

    project: str
    endpoints: Endpoints = field(default_factory=Endpoints)
    credentials: Credentials | None = None

    def _options(self, endpoint: str | None) -> dict[str, Any]:
        if endpoint is None:
            return {"credentials": self.credentials}
        return {
            "credentials": AnonymousCredentials(),
            "client_options": ClientOptions(api_endpoint=endpoint),
        }

    def _run_client(self, cls: Any) -> Any:
        client = cls(transport="rest", **self._options(self.endpoints.cloud_run))
        # The REST transport's requests session defaults to 10 pooled connections per host; launch
        # threads beyond that would open and drop sockets on every call.
        session = getattr(client._transport, "_session", None)
        if session is not None:
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=HTTP_POOL_SIZE)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        return client

    @cached_property
    def jobs(self) -> run_v2.JobsClient:
        client: run_v2.JobsClient = self._run_client(run_v2.JobsClient)
        return client

    @cached_property
    def executions(self) -> run_v2.ExecutionsClient:
        client: run_v2.ExecutionsClient = self._run_client(run_v2.ExecutionsClient)
        return client

    @cached_property
    def tasks(self) -> run_v2.TasksClient:
        client: run_v2.TasksClient = self._run_client(run_v2.TasksClient)
        return client

    @cached_property
    def logging(self) -> Any:
        from google.cloud import logging as gcl

        # The HTTP/JSON API (not gRPC), so the same client works against Google and the local emulator.
        if self.endpoints.logging is None:
            return gcl.Client(project=self.project, credentials=self.credentials, _use_grpc=False)
        return gcl.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            _use_grpc=False,
            client_options={"api_endpoint": self.endpoints.logging},
        )

    @cached_property
    def storage(self) -> Any:
        from google.cloud import storage  # type: ignore[attr-defined]

        if self.endpoints.storage is None:
            return storage.Client(project=self.project, credentials=self.credentials)
        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoints.storage},
        )
