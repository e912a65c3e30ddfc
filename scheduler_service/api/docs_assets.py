"""The API docs page (Swagger UI) and its files, served by the service itself: users run it on closed networks.

flask-smorest's own Swagger UI page starts the UI with an inline script, which
the HTML pages' Content-Security-Policy (see http_headers) forbids; this page
loads a script file instead, and finds its settings in data attributes.
"""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/api/docs"
ASSETS_URL = "/api/docs/assets/"

blp = Blueprint(
    "docs_assets", __name__,
    template_folder="templates", static_folder="static", static_url_path=f"{DOCS_URL}/static",
)


@blp.get(DOCS_URL)
def swagger_ui_page():
    return render_template(
        "api_docs/swagger_ui.html",
        title=current_app.config["API_TITLE"],
        spec_url=url_for("api-docs.openapi_json"),
        assets_url=ASSETS_URL,
        # flask-smorest's setting for its own page, honoured here too.
        swagger_ui_config=current_app.config.get("OPENAPI_SWAGGER_UI_CONFIG", {}),
    )


@blp.get(f"{ASSETS_URL}<path:filename>")
def swagger_ui_asset(filename: str):
    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)
