"""An aiohttp service: commands append events, answers come from a projection.

``python -m examples.aiohttp_app``, or ``python -m aiohttp.web examples.aiohttp_app:init_app``
(configured by ``PUPSOURCING_URL``). See README.md.
"""

from .app import create_app, init_app

__all__ = ["create_app", "init_app"]
