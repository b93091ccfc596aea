"""A Prefect worker type, ``fanout-cloud-run-v2``: prefect-gcp's Cloud Run v2 worker with a configurable API
endpoint, so a Cloud Run work pool can run its flows on Cloud Run, on a regional or private endpoint, or on
the local Cloud Run emulator.

prefect-gcp's worker (``prefect_gcp.workers.cloud_run_v2.CloudRunWorkerV2``) builds its Cloud Run client
with ``https://run.googleapis.com`` fixed in the code. This subclass changes that: the endpoint is a job
variable, ``api_endpoint``, defaulting to Google's. And since prefect-gcp's default ``GcpCredentials`` looks
up Application Default Credentials as it is made, which fails where there are none (a laptop running the
emulator), the credentials block is optional here, with the project as a variable of its own
(``project_id``); without a block the client uses Application Default Credentials, as prefect-gcp's default
block would. Everything else (the job template, how jobs are created, run, watched and deleted) is
prefect-gcp's. Registered with Prefect through the
``prefect.collections`` entry point, so ``prefect work-pool create POOL --type fanout-cloud-run-v2`` and
``prefect worker start --pool POOL`` find it. See docs/prefect.md.
"""

from __future__ import annotations

from typing import Any

import google.auth
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from googleapiclient import discovery
from prefect_gcp.credentials import GcpCredentials
from prefect_gcp.workers.cloud_run_v2 import (
    CloudRunWorkerJobV2Configuration,
    CloudRunWorkerV2,
    CloudRunWorkerV2Variables,
)
from pydantic import Field

GOOGLE_ENDPOINT = "https://run.googleapis.com"
WORKER_TYPE = "fanout-cloud-run-v2"
_ENDPOINT_HELP = (
    "Where the Cloud Run Admin API is reached: Google's (the default), a regional or Private Service Connect "
    "endpoint, or the local Cloud Run emulator (`fanout emulator`, e.g. http://127.0.0.1:8123). Over plain "
    "http (an emulator) no credentials are sent."
)


_CREDENTIALS_HELP = (
    "The GCP credentials block the worker calls Cloud Run with. If not provided, Application Default "
    "Credentials of the worker's environment. None are sent to an http:// endpoint."
)
_PROJECT_HELP = "The project of the Cloud Run jobs. If not provided, the credentials' project."


class EndpointJobConfiguration(CloudRunWorkerJobV2Configuration):  # type: ignore[misc]
    """prefect-gcp's job configuration, plus the API endpoint and the project; the credentials optional."""

    api_endpoint: str = Field(default=GOOGLE_ENDPOINT, title="Cloud Run API endpoint", description=_ENDPOINT_HELP)
    credentials: GcpCredentials | None = Field(default=None, title="GCP Credentials", description=_CREDENTIALS_HELP)
    project_id: str | None = Field(default=None, title="Project", description=_PROJECT_HELP)

    @property
    def project(self) -> str:
        """The project prefect-gcp's worker names the jobs in."""
        if self.project_id:
            return self.project_id
        if self.credentials is not None:
            return str(self.credentials.project)
        _, project = google.auth.default()
        return str(project)


class EndpointVariables(CloudRunWorkerV2Variables):  # type: ignore[misc]
    """prefect-gcp's job variables, plus the API endpoint and the project; the credentials optional."""

    api_endpoint: str = Field(
        default=GOOGLE_ENDPOINT,
        title="Cloud Run API endpoint",
        description=_ENDPOINT_HELP,
        examples=[GOOGLE_ENDPOINT, "https://us-central1-run.googleapis.com", "http://127.0.0.1:8123"],
    )
    credentials: GcpCredentials | None = Field(default=None, title="GCP Credentials", description=_CREDENTIALS_HELP)
    project_id: str | None = Field(default=None, title="Project", description=_PROJECT_HELP, examples=["my-project"])


class FanoutCloudRunWorker(CloudRunWorkerV2):  # type: ignore[misc]
    """prefect-gcp's Cloud Run v2 worker, its client built for the configured ``api_endpoint``."""

    type = WORKER_TYPE
    job_configuration = EndpointJobConfiguration
    job_configuration_variables = EndpointVariables
    _description = (
        "Execute flow runs as Cloud Run jobs (Admin API v2) at a configurable endpoint: Google's, a regional "
        "one, or the local Cloud Run emulator. prefect-gcp's Cloud Run v2 worker otherwise."
    )
    _display_name = "Cloud Run V2 (configurable endpoint)"
    _documentation_url = "https://docs.prefect.io/integrations/prefect-gcp"

    @staticmethod
    def _get_client(configuration: EndpointJobConfiguration) -> Any:
        """The discovery client prefect-gcp's worker uses for every call, at ``configuration.api_endpoint``.

        prefect-gcp's worker calls this (a static method of its own) for its client; the rest of the worker
        is unchanged."""
        endpoint = configuration.api_endpoint.rstrip("/")
        if endpoint.startswith("http://"):
            # A plaintext endpoint is an emulator: a token sent there would travel in the clear.
            credentials: Any = AnonymousCredentials()  # type: ignore[no-untyped-call]
        elif configuration.credentials is not None:
            credentials = configuration.credentials.get_credentials_from_service_account()
        else:
            credentials, _ = google.auth.default()
        return (
            discovery.build(
                "run",
                "v2",
                client_options=ClientOptions(api_endpoint=endpoint),
                credentials=credentials,
                num_retries=3,
            )
            .projects()
            .locations()
        )
