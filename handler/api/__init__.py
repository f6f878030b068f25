"""FastAPI app: schemas, routes, and the one place where errors become status codes."""

from handler.api.app import create_app

__all__ = ["create_app"]
