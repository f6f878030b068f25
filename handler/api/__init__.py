"""FastAPI app: schemas, routes, and the one place where errors become status codes.

FastAPI's import builds ~60 pydantic models of its own (fastapi.openapi.models: the OpenAPI
document's types), which only /openapi.json ever uses; building their validators is about a
third of FastAPI's import, paid by every cold start of the API function. They are imported with
pydantic's `defer_build`, so that each is built the first time it is used instead. This
package's own request and response models are imported before, and built at init as usual.
"""

from handler.api import schemas as _schemas  # noqa: F401  (our models: built now, at init)


def _import_fastapi_deferred() -> None:
    import pydantic

    config = pydantic.BaseModel.model_config
    before = config.get("defer_build")
    config["defer_build"] = True  # inherited by the classes created during the imports below
    try:
        import fastapi  # noqa: F401  (the package imports its routing, params and OpenAPI models)
    finally:
        if before is None:
            config.pop("defer_build", None)
        else:
            config["defer_build"] = before


_import_fastapi_deferred()

from handler.api.app import create_app  # noqa: E402

__all__ = ["create_app"]
