"""FastAPI app factory: ``create_app(settings)``; ``crosslens serve`` runs it under uvicorn."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.api import build_v1_router
from backend.api.routes import health
from backend.core.config import Settings
from backend.db import Database
from backend.services.jobs import JobService
from backend.services.sandbox import SandboxPool  # sandbox

log = logging.getLogger("crosslens.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. Nothing is read from global state: tests pass their own settings."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.torch_threads)
    db = Database(settings.resolved_database_url)
    db.create_all()
    # -- demos (backend core): the zoo's scenarios as projects, once (idempotent, no training)
    if settings.register_demos:
        import threading

        from backend.services.demos import register_demos
        from backend.services.explain import warm_up

        register_demos(settings, db)
        # one-time Captum / torch.func set-up in the background: the first instance view
        # then answers in well under a second instead of ~5-10 s
        threading.Thread(target=warm_up, name="estimator-warm-up", daemon=True).start()
    # -- end demos --
    # -- jobs (jobs engineer): durable analyses on Dask; workers start with the first job --
    jobs = JobService(settings, db)
    # -- end jobs --

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _app.state.jobs.start()  # jobs (tests may swap in a service on a shared cluster)
        yield
        _app.state.jobs.stop()  # jobs: running jobs go back to the queue, resumed on start
        db.dispose()
        _app.state.sandbox.shutdown()  # sandbox: stop the .pt2 host processes

    # The schema is served under /api/v1 behind the token like everything else (deny by
    # default); FastAPI's public /docs and /openapi.json are switched off.
    app = FastAPI(title="crosslens API", version="1", lifespan=lifespan,
                  description="Explain how a multimodal PyTorch model uses its modalities.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.db = db
    app.state.jobs = jobs  # jobs
    # -- sandbox (sandbox engineer): .pt2 programs run only in host processes, each started
    # on first use and stopped when idle; nothing starts here --
    app.state.sandbox = SandboxPool(settings)
    # -- end sandbox --

    app.include_router(health.router)
    v1 = build_v1_router()

    @v1.get("/openapi.json", include_in_schema=False)
    def openapi_schema() -> dict:
        return app.openapi()

    app.include_router(v1)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Errors are ``{"detail": ...}`` with the right status; never a stack trace to clients."""

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = rid
        try:
            response = await call_next(request)
        except Exception:
            log.exception("unhandled error [request %s] %s %s", rid, request.method,
                          request.url.path)
            response = JSONResponse(status_code=500, content={
                "detail": f"internal error; quote request id {rid} when reporting it"})
        response.headers["x-request-id"] = rid
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail},
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")}
                  for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})


def app_from_env() -> FastAPI:
    """uvicorn factory entry: settings from ``CROSSLENS_*`` environment variables."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return create_app(Settings())
