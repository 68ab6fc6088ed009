"""The events of a small shop: the generator's golden-file input.

Plain dataclasses that import nothing from pupsourcing_async. Versions come from the
``v1``/``v2``/``v3`` packages; ``customers`` sits outside them, so its events are v1.
"""
