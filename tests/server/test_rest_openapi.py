"""``GET /api/openapi.json``: generated from the route table, covers every /api route and
method, every ``$ref`` resolves, bodies are the pydantic models' schemas."""

from __future__ import annotations

from typing import Any, Iterator

from starlette.routing import Route

from schema.models import CustomerIn, JobPatch
from server.deps import requires
from server.errors import ok

from test_rest_kit import start  # type: ignore[import-not-found]


@requires("owner")
async def _extra(request):
    """An endpoint added by a test.

    Proves the document is generated from the live route table.
    """
    return ok({})


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


async def test_every_api_route_is_documented(make_harness):
    h = await start(make_harness)
    r = await h.client.get("/api/openapi.json")  # public: no token
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == "1.0"
    expected = {(rt.path_format, m.lower()) for rt in h.app.routes if isinstance(rt, Route)
                and rt.path_format.startswith("/api") for m in rt.methods if m != "HEAD"}
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert len(expected) >= 29  # 8 auth/sync/audit + 21 CRM and OpenAPI operations
    assert expected <= documented
    for must in (("/api/customers/search", "get"), ("/api/materials/bulk-update", "put"),
                 ("/api/jobs/{jobId}/materials", "post"), ("/api/jobs/{id}/status", "put"),
                 ("/api/jobs/{id}/assign", "post"), ("/api/sync/push", "post"), ("/api/auth/login", "post")):
        assert must in documented

    schemas = doc["components"]["schemas"]
    for ref in set(_refs(doc)):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth", "cookieAuth"}
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["components"]["securitySchemes"]["cookieAuth"]["in"] == "cookie"
    op_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids))

    create = doc["paths"]["/api/customers"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CustomerIn"}
    assert schemas["CustomerIn"]["properties"].keys() == CustomerIn.model_json_schema()["properties"].keys()
    assert schemas["CustomerIn"]["required"] == ["name"]
    assert set(create["responses"]) >= {"201", "401", "403", "422"}
    assert create["x-roles"] == ["owner", "office"]
    assert create["security"] == [{"bearerAuth": []}, {"cookieAuth": []}]
    ok_schema = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert ok_schema["properties"]["data"] == {"$ref": "#/components/schemas/CustomerOut"}
    assert doc["paths"]["/api/jobs/{id}"]["put"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobPatch"}
    assert schemas["JobPatch"]["properties"].keys() == JobPatch.model_json_schema()["properties"].keys()

    listing = doc["paths"]["/api/customers"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor", "include_deleted"}
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 100 and limit["schema"]["default"] == 20
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert page["properties"]["meta"] == {"$ref": "#/components/schemas/PageMeta"}
    assert "next_cursor" in schemas["PageMeta"]["required"]
    jobs_q = {p["name"]: p for p in doc["paths"]["/api/jobs"]["get"]["parameters"]}
    assert {"status", "customer_id", "assigned_to"} <= set(jobs_q)
    assert "in_progress" in str(jobs_q["status"]["schema"])
    assert [p["name"] for p in doc["paths"]["/api/materials/{id}"]["put"]["parameters"]] == ["id"]
    assert "security" not in doc["paths"]["/api/openapi.json"]["get"]


async def test_routes_added_to_the_app_appear(make_harness):
    h = await make_harness(extra_routes=[Route("/api/test/extra", _extra, methods=["GET", "POST"])])
    doc = (await h.client.get("/api/openapi.json")).json()
    ops = doc["paths"]["/api/test/extra"]
    assert set(ops) == {"get", "post"}
    assert ops["get"]["summary"] == "An endpoint added by a test."
    assert ops["get"]["description"].startswith("Proves")
    assert ops["get"]["x-roles"] == ["owner"] and "403" in ops["get"]["responses"]
