"""``GET /api/openapi.json``: an OpenAPI 3.1 document generated from the app's route table.

Every HTTP route of the running app is listed, with each method it answers. What is known
about an endpoint comes from:

* ``@api(...)`` (``server.rest.common``): summary, query model, body and response types,
  status, pagination, extra error statuses;
* ``@requires(...)``: the endpoint needs a signed-in caller (bearer token or the
  ``access_token`` cookie) and, when given, one of the roles (``x-roles``);
* the endpoint's docstring, for routes without ``@api``;
* :data:`HINTS`, the request models of the auth, sync and audit routes.

Schemas of bodies and queries are the pydantic models' own JSON schemas
(``models_json_schema``, JSON Schema 2020-12 as OpenAPI 3.1 uses), collected under
``components.schemas``. Every success response is the envelope ``{"data", "meta"}``; every
error the envelope ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Iterable

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import API_VERSION, JSONResponse
from .common import handlers_of, route

__all__ = ["routes", "build_openapi", "HINTS", "REF"]

REF = "#/components/schemas/{model}"
TITLE = "fieldsync API"

_ERROR_TEXT = {
    400: "Malformed request (not JSON, bad base64)",
    401: "Not signed in, or the token is invalid or expired",
    403: "Not allowed (refusal audited)",
    404: "No such record",
    409: "Conflict",
    413: "Payload too large",
    422: "Validation failed: details name each field",
    429: "Rate limited (Retry-After header)",
    503: "Storage unavailable; nothing was stored, retry",
}


def _hints() -> dict[tuple[str, str], dict[str, Any]]:
    """Request models of the routes outside this package (looked up, not required)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}

    def model(module: str, name: str) -> Any:
        try:
            mod = __import__(module, fromlist=[name])
        except ImportError:
            return None
        found = getattr(mod, name, None)
        return found if inspect.isclass(found) and issubclass(found, BaseModel) else None

    login, refresh = model("server.auth.routes", "LoginRequest"), model("server.auth.routes", "RefreshRequest")
    item, batch = model("server.sync_routes", "PushItem"), model("server.sync_routes", "PushBatch")
    if login:
        out[("POST", "/api/auth/login")] = {"body": login}
    if refresh:
        out[("POST", "/api/auth/refresh")] = {"body": refresh, "body_optional": True}
    if item and batch:
        out[("POST", "/api/sync/push")] = {"body": {"oneOf": [{"$ref": REF.format(model=item.__name__)},
                                                              {"$ref": REF.format(model=batch.__name__)}]},
                                           "extra_models": [item, batch]}
    for path, mod, name in (("/api/sync/pull", "server.sync_routes", "PullQuery"),
                            ("/api/sync/status", "server.sync_routes", "StatusQuery"),
                            ("/api/audit", "server.audit_routes", "AuditQuery")):
        q = model(mod, name)
        if q:
            out[("GET", path)] = {"query": q}
    return out


#: ``{(METHOD, path): {"body"|"query"|"extra_models": ...}}`` for routes without ``@api``
HINTS: dict[tuple[str, str], dict[str, Any]] = {}


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models_in(arg)]


def _schema_of(tp: Any) -> dict[str, Any]:
    """A JSON schema for a model, ``list[Model]`` or a raw schema dict."""
    if tp is None:
        return {}
    if isinstance(tp, dict):
        return tp
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return {"$ref": REF.format(model=tp.__name__)}
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": _schema_of(item)}
    raise TypeError(f"cannot describe {tp!r} in OpenAPI")


def _query_params(model: type[BaseModel], components: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            param["description"] = prop["description"]
        out.append(param)
    return out


def _envelope(data: dict[str, Any], paginated: bool) -> dict[str, Any]:
    return {"type": "object", "required": ["data", "meta"],
            "properties": {"data": data, "meta": {"$ref": REF.format(model="PageMeta" if paginated else "Meta")}}}


def _allows_null(schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    if t == "null" or (isinstance(t, list) and "null" in t):
        return True
    return any(isinstance(s, dict) and _allows_null(s) for s in schema.get("anyOf", schema.get("oneOf", ())))


def _tidy(node: Any) -> Any:
    """Drop ``"default": null`` where the schema does not admit null (pydantic emits it for
    patch fields whose omission means "unchanged" and whose null is refused)."""
    if isinstance(node, dict):
        out = {k: _tidy(v) for k, v in node.items()}
        if "default" in out and out["default"] is None and "$ref" not in out and not _allows_null(out):
            del out["default"]
        return out
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def _common_schemas() -> dict[str, Any]:
    meta = {"type": "object", "required": ["timestamp", "version"],
            "properties": {"timestamp": {"type": "string", "format": "date-time"},
                           "version": {"type": "string", "const": API_VERSION}}}
    page_meta = {"type": "object", "required": ["timestamp", "version", "limit", "next_cursor"],
                 "properties": {**meta["properties"],
                                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                                "next_cursor": {"type": ["string", "null"],
                                                "description": "pass as ?cursor= for the next page; null on the "
                                                               "last page"}}}
    error_body = {"type": "object", "required": ["code", "message", "details"],
                  "properties": {"code": {"type": "string", "examples": ["VALIDATION_ERROR", "NOT_FOUND"]},
                                 "message": {"type": "string"},
                                 "details": {"description": "for VALIDATION_ERROR: [{field, message}]"}}}
    error = {"type": "object", "required": ["error"], "properties": {"error": {"$ref": REF.format(model="ErrorBody")}}}
    return {"Meta": meta, "PageMeta": page_meta, "ErrorBody": error_body, "Error": error}


def _summary(endpoint: Any, method: str, path: str) -> tuple[str, str | None]:
    doc = inspect.getdoc(getattr(endpoint, "__wrapped__", endpoint)) or inspect.getdoc(endpoint)
    if not doc:
        return f"{method} {path}", None
    first, _, rest = doc.partition("\n")
    return first.strip(), rest.strip() or None


def _operation(method: str, path: str, r: Route, endpoint: Any, components: dict[str, Any],
               hints: dict[tuple[str, str], dict[str, Any]], op_ids: set[str]) -> dict[str, Any]:
    info: dict[str, Any] = dict(hints.get((method, path), {}))
    info.update(getattr(endpoint, "__openapi__", None) or {})
    summary, description = (info["summary"], None) if info.get("summary") else _summary(endpoint, method, path)
    op_id = getattr(endpoint, "__name__", "endpoint")
    while op_id in op_ids:
        op_id += "_"
    op_ids.add(op_id)
    op: dict[str, Any] = {"operationId": op_id, "summary": summary}
    if description:
        op["description"] = description
    if info.get("tags"):
        op["tags"] = info["tags"]
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in r.param_convertors]
    if info.get("query") is not None:
        params += _query_params(info["query"], components)
    if params:
        op["parameters"] = params
    if info.get("body") is not None:
        op["requestBody"] = {"required": not info.get("body_optional", False),
                             "content": {"application/json": {"schema": _schema_of(info["body"])}}}
    status = str(info.get("status", 200))
    ok_schema = _envelope(_schema_of(info.get("response")) or {}, bool(info.get("paginated")))
    responses: dict[str, Any] = {status: {"description": "Success",
                                          "content": {"application/json": {"schema": ok_schema}}}}
    roles = getattr(endpoint, "__requires__", None)
    errors = set(info.get("errors", ()))
    if roles is not None:
        op["security"] = [{"bearerAuth": []}, {"cookieAuth": []}]
        op["x-roles"] = list(roles) or ["any"]
        errors |= {401, 429}
        if roles:
            errors.add(403)
    if params or info.get("body") is not None:
        errors.add(422)
    if info.get("body") is not None:
        errors.add(400)
    for code in sorted(errors):
        responses[str(code)] = {"description": _ERROR_TEXT.get(code, "Error"),
                                "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
    op["responses"] = responses
    return op


def build_openapi(app_routes: Iterable[BaseRoute], *, title: str = TITLE,
                  hints: dict[tuple[str, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app_routes`` (every ``Route``, every method but HEAD)."""
    hints = {**_hints(), **HINTS, **(hints or {})}
    http_routes = [r for r in app_routes if isinstance(r, Route)]
    models: dict[str, type[BaseModel]] = {}
    for r in http_routes:
        for method, endpoint in handlers_of(r).items():
            info = {**hints.get((method, r.path_format), {}), **(getattr(endpoint, "__openapi__", None) or {})}
            for key in ("body", "response"):
                for mdl in _models_in(info.get(key)):
                    models[mdl.__name__] = mdl
            for mdl in info.get("extra_models", ()):
                models[mdl.__name__] = mdl
    _, defs = models_json_schema([(mdl, "validation") for _, mdl in sorted(models.items())], ref_template=REF)
    components: dict[str, Any] = {**_common_schemas(), **defs.get("$defs", {})}
    paths: dict[str, dict[str, Any]] = {}
    op_ids: set[str] = set()
    for r in http_routes:
        for method, endpoint in handlers_of(r).items():
            paths.setdefault(r.path_format, {})[method.lower()] = _operation(
                method, r.path_format, r, endpoint, components, hints, op_ids)
    return _tidy({
        "openapi": "3.1.0",
        "info": {"title": title, "version": API_VERSION,
                 "description": "REST API of the sync server and the CRM. Success: {\"data\", \"meta\"}; "
                                "errors: {\"error\": {\"code\", \"message\", \"details\"}}; lists are "
                                "cursor-paginated (?limit=&cursor=, meta.next_cursor)."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "access token from POST /api/auth/login (CLI, scripts)"},
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "access_token",
                               "description": "browsers; unsafe methods also need the X-CSRF-Token header "
                                              "echoing the csrf_token cookie"},
            },
        },
    })


async def openapi_json(request: Request) -> Response:
    """The OpenAPI 3.1 document of this API (public)."""
    doc = getattr(request.app.state, "openapi_doc", None)
    if doc is None:
        doc = build_openapi(request.app.routes)
        request.app.state.openapi_doc = doc
    return JSONResponse(doc)


routes = [route("/api/openapi.json", GET=openapi_json)]
