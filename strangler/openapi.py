"""The admin API's OpenAPI document (`openapi.yaml` beside this module), served at `GET /openapi.json`."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document as a dict (read once)."""
    text = (files("strangler") / "openapi.yaml").read_text("utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def openapi_route() -> Route:
    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    return Route("/openapi.json", openapi, methods=["GET"])
