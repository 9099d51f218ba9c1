# Delos Runtime tasks. `just --list` shows them all.

python := env_var_or_default("PYTHON", "python3")

# Install the package with everything the tests need.
install:
    {{python}} -m pip install -e '.[dev]'

# Regenerate protobuf, grpclib stubs and mypy stubs from proto/.
proto:
    {{python}} -m grpc_tools.protoc -I proto --python_out=src --grpclib_python_out=src --mypy_out=src proto/delos/runtime/v1/runtime.proto

fmt:
    ruff format src tests
    ruff check --fix src tests

lint:
    ruff check src tests
    ruff format --check src tests

typecheck:
    mypy src

# The whole test suite.
test *args:
    {{python}} -m pytest {{args}}

check: lint typecheck test

# The gateway on real providers (keys from the environment).
run *args:
    delos-runtime serve {{args}}

# The gateway on the built-in fake providers: no keys needed.
demo *args:
    delos-runtime serve --demo {{args}}

# Benchmarks (docs/benchmarks.md); `just bench overhead streaming` runs some suites only.
bench *args:
    {{python}} -m delos.bench {{args}}

# LiteLLM's proxy and Portkey's gateway on the same upstream as one gateway worker, in their own environments.
bench-peers:
    {{python}} -m delos.bench peers
