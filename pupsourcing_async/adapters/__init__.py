"""Database adapters: ``postgres`` (asyncpg), ``sqlite`` (aiosqlite), ``mysql`` (aiomysql).

Import the one you need; each imports its driver, which comes with its extra.
"""
