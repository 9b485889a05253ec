"""Flywheel: the command line and the ClickHouse store shared by gateway and distiller."""
