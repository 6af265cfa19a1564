"""The composition root: builds and runs each long-lived process (``up``, ``server``,
``worker``, ``consumer run``, ``publisher run``).

Above ``server`` and below ``cli``: the CLI parses and prints, this package wires the
pieces. Only ``serve.serve`` builds the HTTP app and uvicorn; the SDK's supervised child
processes (``sdk/consumers/worker_main.py``, ``sdk/receiver_node.py``) are the one other
place that installs signal handlers.
"""
