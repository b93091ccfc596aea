"""Response field masks, as every Google API honours them: the ``fields`` (``$fields``) system parameter and
the ``X-Goog-FieldMask`` header.

Syntax (Google's "System parameters" page): comma-separated paths whose segments are joined by ``.`` or
``/``; ``a(b,c)`` selects several sub-fields of ``a``; ``*`` selects everything at its level. A path through a
repeated field applies to each element. A name the response message does not have is a 400, as Google
answers. Names are the JSON (lowerCamel) names; the proto (snake_case) names are accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor

from cloudrun_emulator.errors import invalid
from cloudrun_emulator.records import Wire

MAX_MASK_CHARS = 8192


@dataclass
class Mask:
    """Selected sub-fields by JSON name; an empty ``children`` on a selected field means all of it."""

    children: dict[str, Mask] = field(default_factory=dict)
    everything: bool = False


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{what} at position {self.pos} of {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def items(self, into: Mask) -> None:
        self.item(into)
        while self.peek() == ",":
            self.pos += 1
            self.item(into)

    def item(self, into: Mask) -> None:
        node = into
        while True:
            name = self.name()
            if name == "*":
                node.everything = True
                if self.peek() not in ("", ",", ")"):
                    raise self.fail("'*' must end its path")
                return
            node = node.children.setdefault(name, Mask())
            if self.peek() not in (".", "/"):
                break
            self.pos += 1
        if self.peek() == "(":
            self.pos += 1
            self.items(node)
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.pos += 1

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] in "_*"):
            self.pos += 1
        if self.pos == start:
            raise self.fail("expected a field name")
        return self.text[start : self.pos]


def parse(text: str, descriptor: Descriptor | None) -> Mask | None:
    """The mask a request asks for (None: the whole response); checks names against the response message."""
    text = "".join(text.split())
    if not text:
        return None
    if len(text) > MAX_MASK_CHARS:
        raise invalid("fields", f"the field mask is longer than {MAX_MASK_CHARS} characters")
    mask = Mask()
    parser = _Parser(text)
    try:
        parser.items(mask)
        if parser.pos != len(text):
            raise parser.fail("unexpected text")
        if descriptor is not None:
            _check(mask, descriptor, "")
    except ValueError as exc:
        raise invalid("fields", f"Invalid field mask: {exc}", f"Invalid field mask: {exc}.") from None
    return mask


def _check(mask: Mask, descriptor: Descriptor, where: str) -> None:
    if descriptor.full_name == "google.protobuf.Any":
        return  # the type is only known per value
    by_name = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    for name in list(mask.children):
        fd = by_name.get(name)
        if fd is None:
            raise ValueError(f"{descriptor.name} has no field {where}{name}")
        sub = mask.children.pop(name)
        mask.children[fd.json_name] = sub
        if sub.children and (fd.message_type is None or fd.message_type.GetOptions().map_entry):
            if fd.message_type is None:
                raise ValueError(f"{where}{fd.json_name} has no sub-fields")
            continue  # paths into a map select its keys, whatever they are
        if sub.children and fd.message_type is not None:
            _check(sub, fd.message_type, f"{where}{fd.json_name}.")


def apply(value: object, mask: Mask) -> object:
    """The response with only the selected fields."""
    if isinstance(value, list):
        return [apply(item, mask) for item in value]
    if not isinstance(value, dict) or mask.everything or not mask.children:
        return value
    return {key: apply(item, mask.children[key]) for key, item in value.items() if key in mask.children}


def prune(payload: Wire, mask: Mask | None) -> Wire:
    """``apply`` for a whole response (None: unchanged)."""
    if mask is None:
        return payload
    pruned = apply(payload, mask)
    assert isinstance(pruned, dict)
    return pruned
