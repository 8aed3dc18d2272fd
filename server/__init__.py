"""The HTTP server: a Starlette app over the sync engine (``server.app.create_app``).

    app.py           the app factory: routes from modules, one lifespan for every service
    config.py        ServerConfig (limits, token lifetimes, cookie names)
    errors.py        the error tree and the one place rendering every error as the envelope
    deps.py          authentication, CSRF, ``requires(*roles)``, request helpers
    policy.py        which documents a principal may read and write (the authorization hook)
    audit.py         the audit trail of refusals
    ratelimit.py     login and API rate limits (Redis or in-process)
    middleware.py    body size limit, per-IP rate limit
    auth/            passwords, signing keys, tokens, sessions, /api/auth routes
    sync_routes.py   /api/sync/{push,pull,status}
    audit_routes.py  /api/audit
    health.py        /healthz
"""
