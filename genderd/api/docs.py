"""The interactive API documentation at ``/docs``, served from the package: FastAPI's default
page loads Swagger UI from a CDN and is blank on a machine without Internet access. The assets
come from the ``swagger-ui-bundle`` wheel (Apache-2.0), mounted under ``/docs/assets``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"


def install(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) with its assets from the package. Call with ``docs_url=None``
    and ``redoc_url=None`` given to FastAPI (ReDoc has no offline bundle: it is left out)."""
    title = f"{app.title} API"
    openapi_url = app.openapi_url or "/openapi.json"
    redirect = "/docs/oauth2-redirect"

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            oauth2_redirect_url=redirect,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_api_route("/docs", docs, include_in_schema=False, methods=["GET"])
    app.add_api_route(redirect, oauth2_redirect, include_in_schema=False, methods=["GET"])
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
