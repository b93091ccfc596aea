"""Blocks saved once and used by name: a ``GcpCredentials`` block and a ``GcsBucket`` block that receives
both the report (``report_block``) and the flow's persisted result (``result_storage``).

Offline there is no Application Default Credentials, so the credentials block holds a service-account key
generated here, whose ``token_uri`` is a local token endpoint that verifies each grant against the key:
the real ``get_credentials_from_service_account()`` and token exchange run, and the test can tell that
the GCS calls went through the blocks' credentials. fake-gcs-server ignores the bearer token itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefectsupport import TokenEndpoint, service_account_key
from testenv import BUCKET, PROJECT, REGION, report_document

from cloudrun_emulator import Emulator
from controller.store import StoreError, open_bucket_block

SERVICE_ACCOUNT = f"fanout-controller@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture
def blocks(prefect_server: None, gcs: Any) -> Iterator[tuple[str, str, str, TokenEndpoint]]:
    """Saved ``GcpCredentials`` and ``GcsBucket`` blocks: (credentials name, bucket name, folder, endpoint)."""
    from prefect_gcp import GcpCredentials
    from prefect_gcp.cloud_storage import GcsBucket

    info, public_pem = service_account_key(PROJECT, SERVICE_ACCOUNT)
    suffix = uuid.uuid4().hex[:8]
    with TokenEndpoint(public_pem) as endpoint:
        info["token_uri"] = endpoint.url
        credentials = GcpCredentials(service_account_info=info)
        credentials.save(f"fanout-sa-{suffix}")
        folder = f"prefect-blocks-{suffix}"
        GcsBucket(bucket=BUCKET, bucket_folder=folder, gcp_credentials=credentials).save(f"fanout-reports-{suffix}")
        yield f"fanout-sa-{suffix}", f"fanout-reports-{suffix}", folder, endpoint


def test_flow_by_block_names_persists_result_and_report(
    blocks: tuple[str, str, str, TokenEndpoint], emulator: Emulator, gcs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from controller.flow import with_result_block

    credentials_block, bucket_block, folder, endpoint = blocks
    monkeypatch.setenv("FANOUT_EMULATOR_HOST", emulator.url)
    batch_id = f"blocks-{uuid.uuid4().hex[:6]}"
    spec = {"batch_id": batch_id, "defaults": {"job": "hello"}, "items": [{"args": [f"n{i}"]} for i in range(4)]}

    state = with_result_block(bucket_block)(
        batch=spec,
        project=PROJECT,
        region=REGION,
        report_block=bucket_block,
        gcp_credentials_block=credentials_block,
        poll_interval=0.3,
        return_state=True,
    )

    assert state.is_completed(), state
    summary = state.result()
    assert summary["status"] == "succeeded"
    # The report went to the GcsBucket block's bucket and folder, not to report_to's default.
    assert summary["report"] == f"gs://{BUCKET}/{folder}/{batch_id}/report.json"
    bucket = gcs.bucket(BUCKET)
    report = report_document(f"gs://{BUCKET}/{folder}/{batch_id}", gcs)
    assert report["batch_id"] == batch_id
    assert [item["state"] for item in report["items"]] == ["succeeded"] * 4

    # The flow's result is persisted in the same folder: one JSON object besides the batch's own folder,
    # readable without Prefect ...
    objects = {blob.name for blob in bucket.list_blobs(prefix=f"{folder}/")}
    results = [name for name in objects if not name.startswith(f"{folder}/{batch_id}/")]
    assert len(results) == 1, sorted(objects)
    assert json.loads(bucket.blob(results[0]).download_as_bytes()) == summary
    # ... and through Prefect's result API from the flow run as the server records it, which loads the
    # GcsBucket block by the id in the state and downloads the object through the block's credentials.
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
    assert flow_run.parameters["report_block"] == bucket_block
    assert flow_run.parameters["gcp_credentials_block"] == credentials_block
    assert flow_run.state.result() == summary

    # Every GCS call through the blocks was authorised with the block's service-account key.
    assert endpoint.rejected == []
    assert endpoint.grants, "no token was requested: the GCS calls did not use the block's credentials"
    assert {grant["iss"] for grant in endpoint.grants} == {SERVICE_ACCOUNT}


def test_unknown_bucket_block_is_a_clear_error(prefect_server: None) -> None:
    with pytest.raises(StoreError, match="no GcsBucket block named 'no-such-block'"):
        open_bucket_block("no-such-block")
