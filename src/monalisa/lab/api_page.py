"""The API reference page at /api: every route, its inputs and its answers, from the same OpenAPI schema
as /docs, as plain HTML that needs nothing from a CDN.
"""

from __future__ import annotations

import html

# -- the reference page at /api ------------------------------------------------------------


def reference_page(schema: dict) -> str:
    """The API as one self-contained HTML page: every route with its inputs and its answer, then every model."""
    models = schema.get("components", {}).get("schemas", {})

    def model(ref: str) -> tuple[str, dict]:
        name = ref.rsplit("/", 1)[-1]
        return name, models.get(name, {})

    def inputs(operation: dict) -> str:
        names = [f"{p['name']} ({p['in']})" for p in operation.get("parameters", [])]
        for content in operation.get("requestBody", {}).get("content", {}).values():  # JSON or multipart
            body = content.get("schema", {})
            for ref in [body.get("$ref", "")] + [option.get("$ref", "") for option in body.get("anyOf", [])]:
                names += [f"{name} (body)" for name in model(ref)[1].get("properties", {})]
        return ", ".join(html.escape(n) for n in names)

    def answer(operation: dict) -> str:
        success = {**operation["responses"].get("200", {}), **operation["responses"].get("201", {})}
        content = success.get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref")
        if ref is None:
            return html.escape(", ".join(content))
        name, fields = model(ref)
        listed = ", ".join(f"{key}: {_type(value)}" for key, value in fields.get("properties", {}).items())
        return f"<a href='#{html.escape(name)}'>{html.escape(name)}</a> {{{html.escape(listed)}}}"

    def model_row(name: str, fields: dict) -> str:
        items = "".join(f"<li><code>{html.escape(key)}</code>: {html.escape(_type(value))}"
                        f"{' — ' + html.escape(value['description']) if 'description' in value else ''}</li>"
                        for key, value in fields.get("properties", {}).items())
        return (f"<tr id='{html.escape(name)}'><td><code>{html.escape(name)}</code></td>"
                f"<td>{html.escape(fields.get('description', ''))}<ul>{items}</ul></td></tr>")

    routes = "".join(
        f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(operation.get('summary', ''))}</td><td>{inputs(operation)}</td>"
        f"<td>{answer(operation)}</td></tr>"
        for path, item in schema["paths"].items() for method, operation in item.items())
    title = html.escape(schema["info"]["title"])
    return (f"<!doctype html><meta charset='utf-8'><title>{title} API</title>"
            "<style>body{font:15px system-ui;margin:2em;max-width:80em}td{padding:.3em .8em;vertical-align:top;"
            "border-bottom:1px solid #ddd}ul{margin:.3em 0;padding-left:1.2em}</style>"
            f"<h1>{title} API</h1><p>{html.escape(schema['info']['description'])} "
            "Errors are <a href='#ErrorBody'><code>{\"error\": ..., \"field\": ...}</code></a> with a 4xx status "
            "(507: the disk is full; 500: the server failed, its log says why); numbers JSON cannot hold "
            "(an infinite PSNR) are null. "
            "<a href='/openapi.json'>openapi.json</a> · <a href='/docs'>interactive docs</a> (needs the internet)</p>"
            "<table><tr><th>method</th><th>path</th><th>what</th><th>inputs</th><th>answer</th></tr>"
            f"{routes}</table><h2>Models</h2><table>"
            f"{''.join(model_row(name, fields) for name, fields in sorted(models.items()))}</table>")


def _type(field: dict) -> str:
    """A JSON schema's type in a few characters: 'int | null', 'list[RunSummary]', 'dict[str, StatusRow]'."""
    if "$ref" in field:
        return field["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in field:
        return " | ".join(_type(option) for option in field["anyOf"])
    kind = field.get("type", "any")
    if kind == "array" and "prefixItems" in field:
        return f"[{', '.join(_type(item) for item in field['prefixItems'])}]"
    if kind == "array":
        return f"list[{_type(field.get('items', {}))}]"
    if kind == "object" and isinstance(field.get("additionalProperties"), dict):
        return f"dict[str, {_type(field['additionalProperties'])}]"
    return {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}.get(kind, kind)
