"""Data forms (XEP-0004): reading submitted forms and writing forms to fill in.

Only what protocol code needs: a form's type, its fields with their values, and its
``FORM_TYPE`` (XEP-0068). :func:`parse_form` checks the structure XEP-0004 §3 requires (a known
form type, a ``var`` on every field but fixed ones, no field twice, known field types) and
raises :class:`FormError` otherwise, which callers answer with ``<bad-request/>``. What a field
*means* (which fields a form may have, what their values must look like) is the caller's
business. Layout elements (``<title/>``, ``<instructions/>``, ``<reported/>``, ``<item/>``) and
options are not read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from roost.xmpp.element import Element

DATA_FORMS: Final = "jabber:x:data"

FORM_TYPES: Final = frozenset({"form", "submit", "cancel", "result"})
FIELD_TYPES: Final = frozenset(
    {
        "boolean",
        "fixed",
        "hidden",
        "jid-multi",
        "jid-single",
        "list-multi",
        "list-single",
        "text-multi",
        "text-private",
        "text-single",
    }
)


class FormError(ValueError):
    """A data form that does not follow XEP-0004, or a field that is not as expected."""


@dataclass(slots=True)
class Field:
    """One field: ``var``, an optional ``type`` and ``label``, its values in order.

    ``extra`` holds further child elements written after the values (a XEP-0122
    ``<validate/>``, say).
    """

    var: str
    type: str | None = None
    values: list[str] = field(default_factory=list)
    label: str | None = None
    extra: list[Element] = field(default_factory=list)


@dataclass(slots=True)
class Form:
    type: str
    fields: list[Field] = field(default_factory=list)

    @property
    def form_type(self) -> str | None:
        """The value of the hidden ``FORM_TYPE`` field (XEP-0068), if the form has one."""
        found = self.get("FORM_TYPE")
        return found.values[0] if found is not None and found.values else None

    def get(self, var: str) -> Field | None:
        for item in self.fields:
            if item.var == var:
                return item
        return None

    def value(self, var: str) -> str | None:
        """The single value of a field; None when the field or its value is absent or empty.

        Raises :class:`FormError` for a field with more than one value.
        """
        found = self.get(var)
        if found is None:
            return None
        if len(found.values) > 1:
            raise FormError(f"field {var!r} takes one value")
        return found.values[0] if found.values and found.values[0] else None

    def to_element(self) -> Element:
        form = Element("x", DATA_FORMS, {"type": self.type})
        for item in self.fields:
            attrs = {"var": item.var}
            if item.type is not None:
                attrs["type"] = item.type
            if item.label is not None:
                attrs["label"] = item.label
            child = form.add("field", attrs=attrs)
            for value in item.values:
                child.add_text("value", value)
            child.children.extend(item.extra)
        return form


def find_form(parent: Element) -> Element | None:
    """The single ``<x xmlns='jabber:x:data'/>`` child; FormError when there are several."""
    found = list(parent.elements("x", DATA_FORMS))
    if len(found) > 1:
        raise FormError("more than one data form")
    return found[0] if found else None


def parse_form(element: Element) -> Form:
    """Read a ``<x xmlns='jabber:x:data'/>`` element; FormError when it is malformed."""
    if element.name != "x" or element.xmlns != DATA_FORMS:
        raise FormError("not a data form")
    kind = element.attrs.get("type")
    if kind not in FORM_TYPES:
        raise FormError(f"a data form's type is one of {sorted(FORM_TYPES)}, not {kind!r}")
    form = Form(kind)
    seen: set[str] = set()
    for child in element.elements("field", DATA_FORMS):
        field_type = child.attrs.get("type")
        if field_type is not None and field_type not in FIELD_TYPES:
            raise FormError(f"unknown field type {field_type!r}")
        var = child.attrs.get("var")
        if var is None:
            if field_type == "fixed":
                continue  # a label for humans, nothing to read (XEP-0004 §3.2)
            raise FormError("a field without a 'var'")
        if var in seen:
            raise FormError(f"field {var!r} appears twice")
        seen.add(var)
        values = [value.text for value in child.elements("value", DATA_FORMS)]
        form.fields.append(Field(var, field_type, values, child.attrs.get("label")))
    return form
