"""The CRM's REST API: customers, jobs (status, assignment, notes, timeline), materials and
the OpenAPI document. Reads from the SQL projection, writes through ``SyncEngine.edit``.

Register with ``server.app.ROUTE_MODULES`` (``routes`` is in matching order: fixed paths such
as ``/api/customers/search`` and ``/api/materials/bulk-update`` before ``/{id}``).
"""

from __future__ import annotations

from . import customers, jobs, materials, openapi, users

__all__ = ["routes"]

routes = [*customers.routes, *jobs.routes, *materials.routes, *users.routes, *openapi.routes]
