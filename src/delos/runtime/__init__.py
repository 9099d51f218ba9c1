"""The Delos Runtime gateway service.

Layout:
    config.py       settings from the environment (validated, frozen)
    errors.py       the one exception hierarchy and its gRPC status table
    types.py        provider-neutral requests, answers and stream events
    requests.py     wire requests → validated requests
    catalog/        models, families, prices
    providers/      the adapters, one per wire format, and the registry
    routing/        candidates, strategies, fallbacks, races
    wire/           sans-IO parsers: SSE, NDJSON, AWS event-stream
    gateway.py      the process's state, built from the settings
    service.py      the gRPC service
    server.py       the grpclib server, health, reflection, shutdown
    cli.py          the ``delos-runtime`` command
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
