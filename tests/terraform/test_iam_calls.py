"""The IAM table (terraform/iam_calls.yaml) against the code, the module and the README: every call the code
makes is listed with a grant that allows it, and the module grants nothing no call needs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from iam_calls import BEGIN, END, README, load, render
from tfparse import REPO, expression, resources

BINDING_KINDS = (
    "google_project_iam_member",
    "google_cloud_run_v2_job_iam_member",
    "google_storage_bucket_iam_member",
    "google_logging_log_view_iam_member",
    "google_secret_manager_secret_iam_member",
    "google_service_account_iam_member",
    "google_kms_crypto_key_iam_member",
    "google_artifact_registry_repository_iam_member",
)
_CUSTOM_ROLE = re.compile(r"^google_project_iam_custom_role\.(\w+)(?:\[0\])?\.name$")


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    return load()


def bindings(module: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    return {f"{kind}.{name}": body for kind in BINDING_KINDS for name, body in resources(module, kind).items()}


def role_permissions(module: dict[str, list[Any]], table: dict[str, Any], role: str) -> set[str]:
    custom = _CUSTOM_ROLE.match(expression(role) or "")
    if custom:
        return set(resources(module, "google_project_iam_custom_role")[custom.group(1)]["permissions"])
    assert role in table["predefined_roles"], f"{role}: list the permissions relied on in predefined_roles"
    return set(table["predefined_roles"][role])


def test_every_call_is_still_in_the_code_it_names(table):
    for call in table["calls"]:
        if "planned" in call:
            assert "code" not in call, call["method"]
            continue
        text = (REPO / call["code"]).read_text(encoding="utf-8")
        assert call["call"] in text, f"{call['code']} no longer contains {call['call']!r}: update iam_calls.yaml"


def test_every_cloud_run_client_call_is_in_the_table(table):
    listed = {call["call"] for call in table["calls"] if call.get("code") == "controller/cloudrun.py"}
    made = set(re.findall(r"self\.clients\.\w+\.\w+", (REPO / "controller/cloudrun.py").read_text()))
    assert made, "the pattern no longer finds the Cloud Run calls"
    assert made <= listed, f"Cloud Run calls missing from terraform/iam_calls.yaml: {sorted(made - listed)}"


def test_each_grant_of_a_call_allows_it(module, table):
    grants = bindings(module)
    for call in table["calls"]:
        for address in call["grants"]:
            assert address in grants, f"{call['method']}: no {address} in terraform/"
            allowed = role_permissions(module, table, grants[address]["role"])
            missing = set(call["permissions"]) - allowed
            assert not missing, f"{address} does not allow {sorted(missing)} for {call['method']}"


def test_every_grant_serves_a_call_and_custom_roles_hold_only_what_calls_need(module, table):
    grants = bindings(module)
    used = {address for call in table["calls"] for address in call["grants"]}
    assert set(grants) == used, f"grants no call needs: {sorted(set(grants) - used)}"
    needed_by_role: dict[str, set[str]] = {}
    for call in table["calls"]:
        for address in call["grants"]:
            custom = _CUSTOM_ROLE.match(expression(grants[address]["role"]) or "")
            if custom:
                needed_by_role.setdefault(custom.group(1), set()).update(call["permissions"])
    for name, role in resources(module, "google_project_iam_custom_role").items():
        assert set(role["permissions"]) == needed_by_role.get(name, set()), f"custom role {name}"


def test_the_readme_table_is_rendered_from_the_file(table):
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "terraform/README.md lacks the rendered IAM table"
    section = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert section == render(table), "terraform/README.md's IAM table is stale: python tests/terraform/iam_calls.py"


def test_the_prefect_guide_agrees_with_the_module_on_bucket_lookups_and_specs(module):
    """docs/prefect.md once said the module did not grant storage.buckets.get while the module did."""
    custom = resources(module, "google_project_iam_custom_role")
    assert custom["bucket_metadata_reader"]["permissions"] == ["storage.buckets.get"]
    guide = (REPO / "docs" / "prefect.md").read_text(encoding="utf-8")
    paragraph = guide[guide.index("**IAM for results and specs in GCS.**") :].split("\n\n")[0]
    assert "grants the controller exactly that on the report" in paragraph
    assert "does not include `storage.buckets.get`" not in guide
    assert "`spec_prefix`" in paragraph and "fanout/specs/" in paragraph


# Client methods that reach Google APIs in the storage and logging adapters; a new one (a lease's reload,
# a results listing) must be added to terraform/iam_calls.yaml with its permission and grant.
STORAGE_AND_LOGGING_CALLS = re.compile(
    r"\.(upload_from_\w+|download_as_\w+|download_to_\w+|list_blobs|list_entries|reload|exists|delete|"
    r"compose|rewrite|copy_blob|patch|update|get_bucket|lookup_bucket)\("
)


@pytest.mark.parametrize(
    "path", ["controller/store.py", "controller/logs.py", "controller/flow.py", "controller/results.py"]
)
def test_every_storage_and_logging_call_is_in_the_table(table, path):
    listed = " ".join(call["call"] for call in table["calls"] if call.get("code") == path)
    made = set(STORAGE_AND_LOGGING_CALLS.findall((REPO / path).read_text(encoding="utf-8")))
    assert {name for name in made if name not in listed} == set(), f"{path}: add these calls to iam_calls.yaml"
