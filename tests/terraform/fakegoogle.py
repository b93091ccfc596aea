"""A stand-in `hashicorp/google` provider for the tests: the real schema, no Google.

terraform runs this (a plugin in a filesystem mirror, see tfrun.py) as it would the real provider: it serves
the schema google_schema.py read from the provider's prebuilt bindings, so the real `terraform validate`
and `plan` check every argument, block, type and required field against it. Apply stores what was planned,
with a placeholder for each value only the API would know (ids, emails, etags), and records each object it
"created" as a file in FAKEGOOGLE_STORE, which destroy removes again: a test reads that folder to see what a
destroy left. Like the real provider, it refuses to delete an object whose deletion_protection is true.

The tfplugin6 protocol bindings and the go-plugin handshake (TLS, controller, stdio services) are those of
the `tf` framework from PyPI; its own resource model has no list-nested blocks or object attributes, which
the Google schema is full of, so the servicer here works from the schema file instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import tf.provider
from tf.gen import tfplugin_pb2 as pb
from tf.gen import tfplugin_pb2_grpc as rpc
from tf.runner import run_provider
from tf.types import Unknown
from tf.utils import read_dynamic_value, to_dynamic_value

_NESTING = {
    "single": pb.Schema.NestedBlock.SINGLE,
    "list": pb.Schema.NestedBlock.LIST,
    "set": pb.Schema.NestedBlock.SET,
}


def _block_pb(block: dict[str, Any]) -> pb.Schema.Block:
    attributes = [
        pb.Schema.Attribute(
            name=name,
            type=json.dumps(attr["type"]).encode(),
            required=attr.get("required", False),
            optional=attr.get("optional", False),
            computed=attr.get("computed", False),
        )
        for name, attr in sorted(block["attributes"].items())
    ]
    nested = [
        pb.Schema.NestedBlock(
            type_name=name,
            nesting=_NESTING[spec["nesting_mode"]],
            block=_block_pb(spec["block"]),
            min_items=spec.get("min_items", 0),
            max_items=spec.get("max_items", 0),
        )
        for name, spec in sorted(block["block_types"].items())
    ]
    return pb.Schema.Block(attributes=attributes, block_types=nested)


def _placeholder(type_: Any, label: str) -> Any:
    """A value of this type for something only the API would know."""
    if type_ == "string":
        return f"fake-{label}"
    if type_ == "number":
        return 0
    if type_ == "bool":
        return False
    if type_[0] == "map":
        return {}
    if type_[0] in ("list", "set"):
        return []
    return {name: _placeholder(t, f"{label}-{name}") for name, t in type_[1].items()}


def _fill(block: dict[str, Any], value: dict[str, Any] | None, fill: Any, label: str) -> dict[str, Any] | None:
    """``value`` with each computed attribute, in nested blocks too, passed through ``fill(value, type,
    label)``: a plan marks the ones left null unknown, an apply gives each unknown its placeholder."""
    if value is None:
        return None
    out = dict(value)
    for name, attr in block["attributes"].items():
        if attr.get("computed"):
            out[name] = fill(out.get(name), attr["type"], f"{label}-{name}")
    for name, spec in block["block_types"].items():
        nested = out.get(name)
        if spec["nesting_mode"] == "single":
            out[name] = _fill(spec["block"], nested, fill, label)
        elif isinstance(nested, list):
            out[name] = [_fill(spec["block"], item, fill, label) for item in nested]
    return out


class FakeGoogle(rpc.ProviderServicer):
    def __init__(self, schema: dict[str, Any], store: Path | None) -> None:
        self.schema = schema
        self.store = store

    def _block(self, type_name: str, data: bool = False) -> dict[str, Any]:
        kind = "data_source_schemas" if data else "resource_schemas"
        return self.schema[kind][type_name]["block"]

    def _record(self, type_name: str, state: dict[str, Any] | None, prior: dict[str, Any] | None) -> None:
        if self.store is None:
            return
        for value, keep in ((prior, False), (state, True)):
            if value is None:
                continue
            path = self.store / f"{hashlib.sha256(str(value['id']).encode()).hexdigest()[:16]}.json"
            if keep:
                path.write_text(json.dumps({"type": type_name, "id": value["id"]}))
            else:
                path.unlink(missing_ok=True)

    def _exists(self, state: dict[str, Any]) -> bool:
        if self.store is None:
            return True
        return (self.store / f"{hashlib.sha256(str(state['id']).encode()).hexdigest()[:16]}.json").exists()

    def GetMetadata(self, request, context):
        return pb.GetMetadata.Response()

    def GetProviderSchema(self, request, context):
        return pb.GetProviderSchema.Response(
            provider=pb.Schema(block=_block_pb(self.schema["provider"]["block"])),
            provider_meta=pb.Schema(block=pb.Schema.Block()),
            resource_schemas={
                n: pb.Schema(block=_block_pb(s["block"])) for n, s in self.schema["resource_schemas"].items()
            },
            data_source_schemas={
                n: pb.Schema(block=_block_pb(s["block"])) for n, s in self.schema["data_source_schemas"].items()
            },
        )

    # terraform itself checks configuration against the schema; the provider's own rules beyond it (value
    # formats, enums) are not known here.
    def ValidateProviderConfig(self, request, context):
        return pb.ValidateProviderConfig.Response()

    def ValidateResourceConfig(self, request, context):
        return pb.ValidateResourceConfig.Response()

    def ValidateDataResourceConfig(self, request, context):
        return pb.ValidateDataResourceConfig.Response()

    def ConfigureProvider(self, request, context):
        return pb.ConfigureProvider.Response()

    def UpgradeResourceState(self, request, context):
        return pb.UpgradeResourceState.Response(upgraded_state=pb.DynamicValue(json=request.raw_state.json))

    def ReadResource(self, request, context):
        current = read_dynamic_value(request.current_state)
        if current is not None and not self._exists(current):
            return pb.ReadResource.Response(new_state=to_dynamic_value(None))
        return pb.ReadResource.Response(new_state=request.current_state, private=request.private)

    def PlanResourceChange(self, request, context):
        proposed = read_dynamic_value(request.proposed_new_state)
        prior = read_dynamic_value(request.prior_state)
        if proposed is None or prior is not None:
            # A destroy, or an update: computed values already known stay as they are.
            return pb.PlanResourceChange.Response(planned_state=request.proposed_new_state)
        planned = _fill(
            self._block(request.type_name), proposed, lambda v, _t, _l: Unknown if v is None else v, request.type_name
        )
        return pb.PlanResourceChange.Response(planned_state=to_dynamic_value(planned))

    def ApplyResourceChange(self, request, context):
        planned = read_dynamic_value(request.planned_state)
        prior = read_dynamic_value(request.prior_state)
        if planned is None:
            if prior.get("deletion_protection"):
                return pb.ApplyResourceChange.Response(
                    diagnostics=[
                        pb.Diagnostic(
                            severity=pb.Diagnostic.ERROR,
                            summary=f"cannot destroy {request.type_name} {prior.get('name')} without setting "
                            "deletion_protection=false and running `terraform apply`",
                        )
                    ]
                )
            self._record(request.type_name, None, prior)
            return pb.ApplyResourceChange.Response(new_state=to_dynamic_value(None))
        suffix = uuid.uuid4().hex[:8]

        def known(value: Any, type_: Any, label: str) -> Any:
            if value is not Unknown:
                return value
            return f"{label}-{suffix}" if type_ == "string" else _placeholder(type_, label)

        new = _fill(self._block(request.type_name), planned, known, request.type_name)
        assert new is not None
        self._record(request.type_name, new, None)
        return pb.ApplyResourceChange.Response(new_state=to_dynamic_value(new), private=request.planned_private)

    def ReadDataSource(self, request, context):
        config = read_dynamic_value(request.config)
        state = _fill(
            self._block(request.type_name, data=True),
            config,
            lambda v, t, label: _placeholder(t, label) if v is None else v,
            request.type_name,
        )
        return pb.ReadDataSource.Response(state=to_dynamic_value(state))

    def GetFunctions(self, request, context):
        return pb.GetFunctions.Response()

    def StopProvider(self, request, context):
        return pb.StopProvider.Response()


class _Name:
    """What tf's runner asks of a provider object: its address, for the dev-mode handshake text."""

    @staticmethod
    def full_name() -> str:
        return "registry.terraform.io/hashicorp/google"


def main() -> None:
    schema = json.loads(Path(os.environ["FAKEGOOGLE_SCHEMA"]).read_text())
    store = Path(os.environ["FAKEGOOGLE_STORE"]) if os.environ.get("FAKEGOOGLE_STORE") else None
    # tf's runner builds tf.provider.ProviderServicer around the provider object; this one is ours.
    tf.provider.ProviderServicer = lambda _app: FakeGoogle(schema, store)  # type: ignore[misc,assignment]
    run_provider(_Name(), sys.argv)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
