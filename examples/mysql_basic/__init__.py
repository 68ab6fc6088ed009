"""The event store on MySQL/MariaDB. ``python -m examples.mysql_basic``."""
