"""The Delos Runtime gateway: the domain below the gRPC edge.

Layout:
    config.py         settings from the environment (validated, frozen)
    errors.py         the one exception hierarchy, each error with a protocol-neutral kind
    values.py         provider-neutral chat and embeddings requests, answers, stream events
    inputs.py         client requests, validated (the edge builds them from the wire)
    catalog/          models, families, prices
    providers/        the adapters, one per wire format, the provider table and registry
    wire/             sans-IO parsers: SSE, NDJSON, AWS event-stream
    routing/          candidates, strategies, guarded attempts, races, hedges, fallbacks
    completions.py    Complete and CompleteStream above the router: prompts, then the cache
    embeddings.py     embeddings: provider and model choice, one guarded attempt, price
    reports.py        what ListProviders and Health report
    cache.py          the response cache
    prompts.py        prompt references, ``_prompt_render.py`` their templates
    schema.py         JSON Schema checks for structured output
    media.py          image URLs fetched, safely, for providers that need the bytes
    _provider_facts.py  the one table of provider facts (config.py re-exports it)
    redaction.py      secrets out of every message
    observability/    metrics, logs, traces
    gateway.py        the process's state, built from the settings
    grpc/             the gRPC edge: service, server, conversions, auth, TLS, workers
    v1/               generated protobuf and grpclib code
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
