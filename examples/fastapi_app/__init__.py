"""A FastAPI service: commands append events, answers come from a projection.

``uvicorn examples.fastapi_app:app`` (configured by ``PUPSOURCING_URL``), or
``python -m examples.fastapi_app``. See README.md.
"""

from .app import app, create_app

__all__ = ["app", "create_app"]
