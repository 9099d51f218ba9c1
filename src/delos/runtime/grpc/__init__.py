"""The gRPC edge: the only code that sees protobuf or grpclib.

Layout:
    convert.py            protobuf ⇄ domain values, and the one error kind → status table
    service.py            RuntimeService: each RPC receives, calls the domain, converts, sends
    receive.py            reading a request message with a size limit
    _grpclib_private.py   the grpclib internals the drain and the size limit need, checked
    auth.py               client keys, checked before any handler runs
    tls.py                the server's TLS context
    server.py             the grpclib server: health, reflection, drain on SIGTERM/SIGINT
    workers.py            ``--workers N``: processes sharing one port
"""

__all__: list[str] = []
