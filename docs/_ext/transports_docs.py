"""Sphinx directives that make reference pages from the code, so that they cannot drift.

``{transports-traits}``: ``TransportsExtension``'s configurable traits (name, type, default,
help), in the order the class defines them.

``{openapi} path/to/rest-api.yml``: the REST API, one section per operation, from the OpenAPI
document the package ships (and the server serves at ``/api/transports/spec.yaml``).

Both write Markdown and have MyST parse it, so they are meant for MyST pages.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from traitlets import TraitType

MiB = 1024 * 1024
KiB = 1024
METHODS = ("get", "post", "put", "patch", "delete")


# -- configuration -----------------------------------------------------------------------------


def config_traits(cls: type) -> list[tuple[str, TraitType]]:
    """The configurable traits a class defines itself, in the order of its source."""
    traits = []
    for name, value in vars(cls).items():
        if isinstance(value, TraitType) and value.metadata.get("config"):
            traits.append((name, value))
    return traits


def one_line(text: str) -> str:
    """Help text as one Markdown table cell."""
    return " ".join(textwrap.dedent(text).split()).replace("|", "\\|")


def default_text(trait: TraitType) -> str:
    value = trait.default_value
    if isinstance(value, bool) or value is None:
        return f"`{value}`"
    if isinstance(value, int) and value >= KiB:
        for unit, size in (("MiB", MiB), ("KiB", KiB)):
            if value % size == 0:
                return f"{value // size} {unit}"
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return f"`{list(value)!r}`"
    return f"`{value!r}`"


def traits_table(cls: type) -> str:
    """One definition per trait: its name, type and default, then its help."""
    out = []
    for name, trait in config_traits(cls):
        heading = f"`{name}` ({type(trait).__name__}, default {default_text(trait)})"
        out += [heading, f": {one_line(trait.help)}", ""]
    return "\n".join(out)


class TraitsDirective(SphinxDirective):
    """``{transports-traits}``: the extension's configuration, from its traits."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from jupyter_transports.app import TransportsExtension

        return self.parse_markdown(traits_table(TransportsExtension))

    def parse_markdown(self, text: str) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(text.splitlines(), self.content_offset, container)
        return container.children


# -- the REST API ------------------------------------------------------------------------------


class OpenAPI:
    """An OpenAPI 3 document, its ``$ref``s resolved on demand."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, item: Any) -> Any:
        while isinstance(item, dict) and "$ref" in item:
            target: Any = self.document
            for part in item["$ref"].lstrip("#/").split("/"):
                target = target[part]
            item = target
        return item

    def schema_type(self, schema: dict[str, Any]) -> str:
        ref = schema.get("$ref")
        if ref:
            return ref.rsplit("/", 1)[-1]
        schema = self.resolve(schema)
        kind = schema.get("type", "any JSON")
        if kind == "array":
            return f"array of {self.schema_type(schema.get('items') or {})}"
        return str(kind)

    def markdown(self) -> str:
        info = self.document.get("info", {})
        out = [one_line(info.get("description", "")), ""]
        for path, item in self.document.get("paths", {}).items():
            shared = item.get("parameters", [])
            for method in METHODS:
                if method in item:
                    out.extend(self.operation(method, path, item[method], shared))
        out.extend(self.schemas())
        return "\n".join(out)

    def operation(
        self, method: str, path: str, operation: dict[str, Any], shared: list[Any]
    ) -> list[str]:
        out = [f"## {method.upper()} {path}", "", one_line(operation.get("summary", "")), ""]
        if operation.get("description"):
            out += [textwrap.dedent(operation["description"]).strip(), ""]
        parameters = [self.resolve(p) for p in [*shared, *operation.get("parameters", [])]]
        if parameters:
            out += ["| parameter | in | type | description |", "| --- | --- | --- | --- |"]
            for p in parameters:
                required = " (required)" if p.get("required") else ""
                kind = self.schema_type(p.get("schema", {}))
                description = one_line(p.get("description", ""))
                out.append(f"| `{p['name']}` | {p['in']}{required} | {kind} | {description} |")
            out.append("")
        body = self.resolve(operation.get("requestBody"))
        if body:
            for media, content in body.get("content", {}).items():
                schema = self.resolve(content.get("schema", {}))
                required_body = "required" if body.get("required") else "optional"
                out += [f"Body ({media}, {required_body}): a JSON object of", ""]
                out += self.properties(schema)
        out += ["| answer | means |", "| --- | --- |"]
        for status, response in operation.get("responses", {}).items():
            response = self.resolve(response)
            described = one_line(response.get("description", ""))
            for media, content in (response.get("content") or {}).items():
                described += f" ({media}: {self.schema_type(content.get('schema', {}))})"
            out.append(f"| {status} | {described} |")
        out.append("")
        return out

    def properties(self, schema: dict[str, Any]) -> list[str]:
        required = set(schema.get("required", []))
        out = ["| field | type | default | description |", "| --- | --- | --- | --- |"]
        for name, prop in schema.get("properties", {}).items():
            prop = self.resolve(prop)
            default = f"`{prop['default']!r}`" if "default" in prop else ""
            mark = " (required)" if name in required else ""
            out.append(
                f"| `{name}`{mark} | {self.schema_type(prop)} | {default} "
                f"| {one_line(prop.get('description', ''))} |"
            )
        if schema.get("additionalProperties") is False:
            out += ["", "Other fields are refused (400)."]
        out.append("")
        return out

    def schemas(self) -> list[str]:
        out = ["## Schemas", ""]
        for name, schema in self.document.get("components", {}).get("schemas", {}).items():
            out += [f"### `{name}`", "", one_line(schema.get("description", "")), ""]
            if schema.get("properties"):
                out += self.properties(schema)
            else:
                out += [f"Type: {self.schema_type(schema)}.", ""]
        return out


class OpenAPIDirective(TraitsDirective):
    """``{openapi} relative/path.yml``: the REST API, from its OpenAPI document."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        source = Path(self.env.srcdir, self.arguments[0]).resolve()
        self.env.note_dependency(str(source))
        document = OpenAPI(yaml.safe_load(source.read_text()))
        container = nodes.section()
        self.state.nested_parse(
            document.markdown().splitlines(), self.content_offset, container, match_titles=True
        )
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("transports-traits", TraitsDirective)
    app.add_directive("openapi", OpenAPIDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
