"""The Google provider's schema, read offline from the prebuilt CDK bindings on PyPI.

The provider itself cannot be downloaded here, but `cdktn-provider-google` (and, for 6.x,
`cdktf-cdktf-provider-google`) are generated from its `terraform providers schema -json`, and each
resource's TypeScript source travels inside the wheel (in the source maps of its .js files). From it this
reads, for every resource and data source terraform/ uses:

- each argument and block, with its type: the `<struct>ToHclTerraform` functions name each one, say
  whether it is a block, and give its collection kind (simple, list, set, map, struct) and element type;
- whether it is required, optional or computed: the generator writes `// name - computed: ..., optional:
  ..., required: ...` above every field of a resource class and of each block's OutputReference class;
- a block of at most one item: its field is an `OutputReference`, not a `List`;
- computed-only attributes (never in configuration) and their types: the getters, e.g.
  `getStringAttribute('uid')` or `new XList(this, "conditions", false)`.

The result is a schema in the shape of `terraform providers schema -json`, cached per provider version
under the test run's cache, which tests/terraform/fakegoogle serves to the real terraform binary.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import json
import re
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Provider version -> the PyPI package and release generated from it (the package's README names the
# provider version it was built from). 7.31.0 is the lowest 7.x any of them gives: cdktn-provider-google
# 16.13.0 to 18.0.0 and cdktf-cdktf-provider-google 16.12.1 are all 6.50.0.
PACKAGES: dict[str, tuple[str, str]] = {
    "6.50.0": ("cdktf-cdktf-provider-google", "16.12.1"),
    "7.31.0": ("cdktn-provider-google", "19.0.0"),
    "7.46.1": ("cdktn-provider-google", "20.3.1"),
    "8.7.0": ("cdktn-provider-google", "21.1.0"),
}

INDEX = "https://pypi.org/simple"
_FORMAT = 1  # bump when the extracted schema's shape changes, so cached files are rebuilt

_CLASS = re.compile(r"^export class (\w+) extends cdktn?f?\.(\w+) \{\n(.*?)^\}\n", re.M | re.S)
_TO_HCL = re.compile(
    r"^export function \w+ToHclTerraform\(struct\?: (?:\w+OutputReference \| )?(\w+)[^\n]*\n(.*?)^\}\n", re.M | re.S
)
_HCL_ATTR = re.compile(
    r"^\s*(\w+): \{\n\s*value: [^\n]*\n"
    r'\s*isBlock: (true|false),\n\s*type: "(\w+)",\n\s*storageClassType: "(\w+)",',
    re.M,
)
_FLAGS = re.compile(r"^  // (\w+) - computed: (true|false), optional: (true|false), required: (true|false)\n", re.M)
_RESOURCE_TYPE = re.compile(r'static readonly tfResourceType = "(\w+)"')
_NEW_COMPLEX = re.compile(r'new (\w+?)(List|OutputReference)\(this, "\w+"(?:, (true|false))?\)')
_NEW_MAP = re.compile(r"new cdktn?f?\.(String|Number|Boolean|Any)Map\(this")
_GETTER = re.compile(r"this\.get(String|Number|Boolean|List|NumberList|StringMap|NumberMap|BooleanMap)Attribute\(")

_PRIMITIVE = {"string": "string", "number": "number", "boolean": "bool"}
_GETTER_TYPES: dict[str, Any] = {
    "String": "string",
    "Number": "number",
    "Boolean": "bool",
    "List": ["list", "string"],
    "NumberList": ["list", "number"],
    "StringMap": ["map", "string"],
    "NumberMap": ["map", "number"],
    "BooleanMap": ["map", "bool"],
}
_MAP_TYPES = {"String": "string", "Number": "number", "Boolean": "bool", "Any": "string"}


class SchemaError(Exception):
    """The bindings hold something this reader does not understand (a new generator construct)."""


def cache_dir(repo: Path) -> Path:
    # pytest's own cache folder (what config.cache.mkdir uses), also when the cache plugin is off.
    path = repo / ".pytest_cache" / "d" / "terraform-google"
    path.mkdir(parents=True, exist_ok=True)
    return path


def download(package: str, version: str, into: Path) -> Path:
    """The package's wheel from the index, through PEP 691's JSON listing; kept in ``into``."""
    name = f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    target = into / name
    if target.exists():
        return target
    request = urllib.request.Request(f"{INDEX}/{package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        files = json.load(answer)["files"]
    (entry,) = [f for f in files if f["filename"] == name]
    partial = target.with_suffix(".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(entry["url"], timeout=600) as answer, partial.open("wb") as out:
        while chunk := answer.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != entry["hashes"]["sha256"]:
        partial.unlink()
        raise SchemaError(f"{name}: sha256 does not match the index")
    partial.rename(target)
    return target


def _sources(wheel: Path, dirs: set[str]) -> dict[str, list[str]]:
    """TypeScript source of each lib/<dir>/ wanted, from the source maps of its .js files."""
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(".jsii.tgz")]
        blob = archive.read(member)
    found: dict[str, list[str]] = {d: [] for d in dirs}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for info in tar:
            parts = info.name.split("/")
            if len(parts) < 4 or parts[1] != "lib" or parts[2] not in dirs or not info.name.endswith(".js"):
                continue
            handle = tar.extractfile(info)
            assert handle is not None
            js = handle.read().decode()
            match = re.search(r"sourceMappingURL=data:application/json;base64,(\S+)", js)
            if match:
                found[parts[2]].extend(json.loads(base64.b64decode(match.group(1)))["sourcesContent"])
    return found


def _dir_of(kind: str, type_name: str) -> str:
    if kind == "provider":
        return "provider"
    stem = type_name.removeprefix("google_").replace("_", "-")
    return f"data-google-{stem}" if kind == "data" else stem


class _Reader:
    """One resource folder's classes and struct functions, turned into schema blocks."""

    def __init__(self, sources: Iterable[str]) -> None:
        text = "\n".join(sources)
        self.classes = {m.group(1): m.group(3) for m in _CLASS.finditer(text)}
        self.structs = {m.group(1): m.group(2) for m in _TO_HCL.finditer(text)}
        self.resource_types = {
            t.group(1): name for name, body in self.classes.items() if (t := _RESOURCE_TYPE.search(body))
        }

    @staticmethod
    def _fields(body: str) -> dict[str, tuple[dict[str, bool], str]]:
        """Each flagged field of a class: its flags and the code that follows, up to the next field."""
        marks = list(_FLAGS.finditer(body))
        fields = {}
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
            flags = {"computed": mark.group(2) == "true", "optional": mark.group(3) == "true"}
            flags["required"] = mark.group(4) == "true"
            fields[mark.group(1)] = (flags, body[mark.end() : end])
        return fields

    def block(self, class_name: str, hcl_body: str) -> dict[str, Any]:
        fields = self._fields(self.classes.get(class_name, ""))
        attributes: dict[str, Any] = {}
        blocks: dict[str, Any] = {}
        for attr in _HCL_ATTR.finditer(hcl_body):
            name, is_block, kind, storage = attr.group(1), attr.group(2) == "true", attr.group(3), attr.group(4)
            flags, code = fields.get(name, ({"computed": False, "optional": True, "required": False}, ""))
            if is_block:
                blocks[name] = self._nested_block(name, kind, storage, flags, code)
            else:
                attributes[name] = {"type": self._config_type(name, kind, storage), **_set(flags)}
        for name, (flags, code) in fields.items():
            if name not in attributes and name not in blocks:
                if flags["optional"] or flags["required"]:
                    raise SchemaError(f"{class_name}.{name}: settable but not in its ToHclTerraform function")
                attributes[name] = {"type": self._computed_type(f"{class_name}.{name}", code), "computed": True}
        return {"attributes": attributes, "block_types": blocks}

    def _nested_block(self, name: str, kind: str, storage: str, flags: dict[str, bool], code: str) -> dict[str, Any]:
        struct = storage.removesuffix("List")
        if struct not in self.structs:
            raise SchemaError(f"block {name}: no ToHclTerraform function for {struct}")
        inner = self.block(f"{struct}OutputReference", self.structs[struct])
        if kind == "struct":
            return {"nesting_mode": "single", "block": inner}
        if kind not in ("list", "set"):
            raise SchemaError(f"block {name}: unknown kind {kind}")
        nested: dict[str, Any] = {"nesting_mode": kind, "block": inner}
        if flags["required"]:
            nested["min_items"] = 1
        complex_field = _NEW_COMPLEX.search(code)
        if complex_field and complex_field.group(2) == "OutputReference":
            nested["max_items"] = 1
        return nested

    @staticmethod
    def _config_type(name: str, kind: str, storage: str) -> Any:
        if kind == "simple" and storage in _PRIMITIVE:
            return _PRIMITIVE[storage]
        for suffix, collection in (("List", ("list", "set")), ("Map", ("map",))):
            element = storage.removesuffix(suffix)
            if storage.endswith(suffix) and kind in collection and element in _PRIMITIVE:
                return [kind, _PRIMITIVE[element]]
        raise SchemaError(f"attribute {name}: unknown type {kind}/{storage}")

    def _computed_type(self, where: str, code: str) -> Any:
        if complex_field := _NEW_COMPLEX.search(code):
            struct, _, wraps_set = complex_field.groups()
            fields = self._fields(self.classes.get(f"{struct}OutputReference", ""))
            element = ["object", {n: self._computed_type(f"{where}.{n}", c) for n, (_, c) in fields.items()}]
            return ["set" if wraps_set == "true" else "list", element]
        if map_field := _NEW_MAP.search(code):
            return ["map", _MAP_TYPES[map_field.group(1)]]
        if getter := _GETTER.search(code):
            found = _GETTER_TYPES[getter.group(1)]
            if isinstance(found, list) and found[0] == "list" and "Fn.tolist(" in code:
                return ["set", found[1]]
            return found
        raise SchemaError(f"{where}: cannot tell the type of a computed attribute")

    def top(self, type_name: str) -> dict[str, Any]:
        class_name = self.resource_types.get(type_name)
        if class_name is None:
            raise SchemaError(f"{type_name}: no class with this tfResourceType")
        body = self.classes[class_name]
        hcl = body[body.index("synthesizeHclAttributes()") :]
        block = self.block(class_name, hcl)
        if type_name == "google":
            block["attributes"].pop("alias", None)  # a meta-argument of every provider block, not the schema's
        return block


def _set(flags: dict[str, bool]) -> dict[str, bool]:
    return {k: True for k, v in flags.items() if v}


def extract(wheel: Path, resources: set[str], data_sources: set[str]) -> dict[str, Any]:
    wanted = [("provider", "google")] + [("resource", r) for r in resources] + [("data", d) for d in data_sources]
    sources = _sources(wheel, {_dir_of(kind, name) for kind, name in wanted})
    schema: dict[str, Any] = {"resource_schemas": {}, "data_source_schemas": {}}
    for kind, name in wanted:
        block = _Reader(sources[_dir_of(kind, name)]).top(name)
        if kind == "provider":
            schema["provider"] = {"block": block}
        else:
            schema["resource_schemas" if kind == "resource" else "data_source_schemas"][name] = {"block": block}
    return schema


def provider_schema(repo: Path, version: str, resources: set[str], data_sources: set[str]) -> Path:
    """The schema file of provider ``version`` for these types, extracted once and cached."""
    package, release = PACKAGES[version]
    key = hashlib.sha256(json.dumps([_FORMAT, sorted(resources), sorted(data_sources)]).encode()).hexdigest()[:12]
    cache = cache_dir(repo)
    target = cache / f"google-{version}-{key}.json"
    # Test workers may ask for the same version at once: one downloads and extracts, the others wait.
    with (cache / f"{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            wheel = download(package, release, cache)
            schema = extract(wheel, resources, data_sources)
            partial = target.with_suffix(".part")
            partial.write_text(json.dumps(schema, indent=1, sort_keys=True))
            partial.rename(target)
    return target
