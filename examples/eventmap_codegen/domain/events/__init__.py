"""The order events: plain dataclasses, no library imports.

The ``v1`` and ``v2`` packages give the versions; ``values`` holds the value types the
events carry. ``pupsourcing-async eventmap-gen`` turns this package into
``examples/eventmap_codegen/eventmap/``.
"""
