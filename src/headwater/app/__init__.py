"""The composition root: builds and runs a node with its HTTP server (``up``, ``server``).

Above ``server`` and below ``cli``: the CLI parses and prints, this package wires the
pieces; no module below it starts uvicorn or installs signal handlers.
"""
