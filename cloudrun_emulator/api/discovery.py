"""The Cloud Run Admin API v2 discovery document (``GET /$discovery/rest?version=v2``), written from the
emulator's own method table (``methods.py``) and the protobuf descriptors of its messages.

It describes what the emulator serves, in the Google API Discovery Service format that google-api-python-client
(``build(..., discoveryServiceUrl=...)``) and other discovery-based clients read: one resource per collection
(``projects.locations.jobs``, ``...jobs.executions``, ``...executions.tasks``, ``projects.locations.operations``),
each method with its HTTP path and verb, path and query parameters, request and response schemas. Schemas are
named as Google names them (``GoogleCloudRunV2Job``), from the message's full name. Descriptions are short:
the protos' own are not repeated here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from cloudrun_emulator.api.methods import METHODS, PATH_FIELD, Method

Doc = dict[str, Any]
_RUN = "google.cloud.run.v2."
# gRPC service -> the discovery resource path its methods belong to.
_RESOURCES = {
    _RUN + "Jobs": ("projects", "locations", "jobs"),
    _RUN + "Executions": ("projects", "locations", "jobs", "executions"),
    _RUN + "Tasks": ("projects", "locations", "jobs", "executions", "tasks"),
    "google.longrunning.Operations": ("projects", "locations", "operations"),
}
_NOUNS = ("Jobs", "Job", "Executions", "Execution", "Tasks", "Task", "Operations", "Operation")
_SCALARS: dict[int, Doc] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32"},
    # 64-bit integers are strings in proto3 JSON.
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Well-known types with a JSON form of their own.
_WELL_KNOWN: dict[str, Doc] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "google-datetime"},
    "google.protobuf.Duration": {"type": "string", "format": "google-duration"},
    "google.protobuf.FieldMask": {"type": "string", "format": "google-fieldmask"},
    "google.protobuf.Value": {"type": "any"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": {"type": "any"}},
    "google.protobuf.Any": {
        "type": "object",
        "additionalProperties": {"type": "any", "description": "Properties of the object; @type names its type."},
    },
}
_SYSTEM_PARAMETERS = {
    "alt": {"type": "string", "location": "query", "default": "json", "enum": ["json"]},
    "fields": {"type": "string", "location": "query", "description": "Response field mask."},
}


def schema_name(message: Descriptor) -> str:
    """``google.cloud.run.v2.Job`` -> ``GoogleCloudRunV2Job``; a nested message is named as Google names it,
    by its package and own name (``RunJobRequest.Overrides`` -> ``GoogleCloudRunV2Overrides``)."""
    parts = [*message.file.package.split("."), message.name]
    return "".join(part[:1].upper() + part[1:] for part in parts)


class _Schemas:
    """The schemas of every message reachable from the methods, collected as they are referred to."""

    def __init__(self) -> None:
        self.found: dict[str, Doc] = {}

    def ref(self, message: Descriptor, skip: frozenset[str] = frozenset()) -> Doc:
        """A reference to the message's schema; ``skip``: fields left out (a body's path fields)."""
        name = schema_name(message)
        if name not in self.found:
            self.found[name] = {}  # claimed first: messages refer to themselves (Struct, Status details)
            properties = {f.json_name: self.field(f) for f in message.fields if f.name not in skip}
            self.found[name] = {"id": name, "type": "object", "properties": properties}
        return {"$ref": name}

    def field(self, field: FieldDescriptor) -> Doc:
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            return {"type": "object", "additionalProperties": self.single(message.fields_by_name["value"])}
        single = self.single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def single(self, field: FieldDescriptor) -> Doc:
        if field.type == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
        if field.message_type is not None:
            return dict(_WELL_KNOWN.get(field.message_type.full_name) or self.ref(field.message_type))
        return dict(_SCALARS[field.type])


def _verb(rpc: str) -> str:
    """The discovery method name: ``RunJob`` -> ``run``, ``UpdateJob`` -> ``patch``, ``GetIamPolicy`` as is."""
    if rpc.startswith("Update"):
        return "patch"
    for noun in _NOUNS:
        if rpc.endswith(noun) and rpc != noun:
            rpc = rpc.removesuffix(noun)
            break
    return rpc[:1].lower() + rpc[1:]


def _query_parameters(message: Descriptor, skip: set[str], prefix: str = "") -> Iterable[tuple[str, Doc]]:
    """The request fields sent as query parameters; a message field's own fields as ``field.sub``."""
    for field in message.fields:
        if field.name in skip or field.json_name in skip:
            continue
        nested = field.message_type
        if nested is not None and nested.full_name not in _WELL_KNOWN and not nested.GetOptions().map_entry:
            yield from _query_parameters(nested, set(), f"{prefix}{field.json_name}.")
            continue
        single = _Schemas().single(field) if nested is None else dict(_WELL_KNOWN[nested.full_name])
        doc: Doc = {**single, "location": "query"}
        if field.is_repeated:
            doc["repeated"] = True
        yield prefix + field.json_name, doc


def _method(method: Method, schemas: _Schemas) -> Doc:
    dotted = PATH_FIELD.findall(method.uri)
    path_names = [d.rsplit(".", 1)[-1] for d in dotted]
    path = "v2/" + PATH_FIELD.sub(lambda m: "{+" + m.group(1).rsplit(".", 1)[-1] + "}", method.uri)
    parameters: Doc = {
        name: {"type": "string", "required": True, "location": "path", "description": f"The {name} in the path."}
        for name in path_names
    }
    verb = _verb(method.name)
    doc: Doc = {
        "id": "run." + ".".join(_RESOURCES[method.service]) + "." + verb,
        "description": f"{method.service.rsplit('.', 1)[-1]}.{method.name}.",
        "httpMethod": method.verb,
        "path": path,
        "flatPath": path,
        "parameterOrder": path_names,
        "parameters": parameters,
    }
    request = method.request.DESCRIPTOR if method.request is not None else None
    in_path = frozenset(d.split(".", 1)[0] for d in dotted)
    if request is not None and method.body == "*":
        doc["request"] = schemas.ref(request, skip=in_path)
    elif request is not None and method.body:
        doc["request"] = schemas.ref(request.fields_by_name[method.body].message_type)
    if request is not None and method.body != "*":
        sent_elsewhere = set(in_path) | ({method.body} if method.body else set())
        parameters.update(_query_parameters(request, sent_elsewhere))
    if method.response is not None:
        doc["response"] = schemas.ref(method.response.DESCRIPTOR)
    return doc


def document(root_url: str) -> Doc:
    """The discovery document, for clients that reach the emulator at ``root_url`` (ending in ``/``)."""
    schemas = _Schemas()
    resources: Doc = {}
    for method in METHODS:
        where = _RESOURCES.get(method.service)
        if where is None:
            continue  # Logging is an API of its own
        node: Doc = {"resources": resources}
        for name in where:
            node = node["resources"].setdefault(name, {})
            node.setdefault("resources", {})
        node.setdefault("methods", {})[_verb(method.name)] = _method(method, schemas)
    return {
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "run:v2",
        "name": "run",
        "version": "v2",
        "canonicalName": "Cloud Run",
        "title": "Cloud Run Admin API (local emulator)",
        "description": "The Cloud Run Admin API v2 as the local emulator serves it (cloudrun_emulator).",
        "protocol": "rest",
        "rootUrl": root_url,
        "servicePath": "",
        "baseUrl": root_url,
        "basePath": "/",
        "batchPath": "batch",
        "parameters": _SYSTEM_PARAMETERS,
        "resources": _prune(resources),
        "schemas": schemas.found,
    }


def _prune(resources: Doc) -> Doc:
    """Drop the empty ``resources`` maps of leaf resources."""
    for node in resources.values():
        if node.get("resources"):
            _prune(node["resources"])
        else:
            node.pop("resources", None)
    return resources
