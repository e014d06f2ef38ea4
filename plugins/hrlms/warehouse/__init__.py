"""Warehouse access: connections, schema bootstrap and COPY loading."""
