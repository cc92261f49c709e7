# syntax=docker/dockerfile:1.7
# One image for the three services: athenic-api, athenic-orchestrator, athenic-operator (and
# the `athenic` CLI). The Helm chart runs each Deployment with its own console script as the
# command; sharing one image means one build, one scan and one tag per release.
#
#   docker build -t athenic:dev .
#   docker run --rm -p 3000:3000 -e NATS_URL=nats://host:4222 athenic:dev athenic-api
#
# Base pinned to an exact patch tag; pin the digest too where your registry policy asks for it:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: a virtualenv with the project and its runtime dependencies ------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# a compiler only for the odd dependency without a wheel for this platform; never shipped
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/athenic
WORKDIR /src
# metadata first: the dependency layer is rebuilt only when pyproject.toml changes (empty
# stand-ins for the packages and the readme let the build backend resolve the extras)
COPY pyproject.toml ./
RUN mkdir -p services/athenic operator/athenic_operator \
 && touch README.md services/athenic/__init__.py operator/athenic_operator/__init__.py \
 && /opt/athenic/bin/pip install ".[api,orchestrator,operator,notifier]" \
 && /opt/athenic/bin/pip uninstall -y athenic
COPY README.md ./
COPY services/ services/
COPY operator/ operator/
# a real (non-editable) install, bytecode compiled now: the root filesystem is read-only at run time
RUN /opt/athenic/bin/pip install --no-deps . \
 && /opt/athenic/bin/python -m compileall -q /opt/athenic/lib

# ---- sandbox-python: what user code imports in the local sandbox (numpy, pandas, matplotlib...) --
# A virtualenv of Debian's /usr/bin/python3 (the interpreter the sandbox runs; the services run
# /usr/local/bin/python), apart from the services' one, at the path ATHENIC_SANDBOX_PYTHON_ENV
# names below. The same install script as `make sandbox-python`.
FROM ${PYTHON_IMAGE} AS sandbox-python
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY services/athenic/orchestrator/sandbox/sandbox_python/ /src/sandbox_python/
RUN sh /src/sandbox_python/install.sh /opt/sandbox-python /usr/bin/python3

# ---- runtime: the interpreter, the virtualenv, bubblewrap; no compilers, no pip cache ----
FROM ${PYTHON_IMAGE} AS runtime
# bubblewrap, prlimit and setpriv (util-linux) and Debian's python3 with its whole standard library (numpy and
# pandas need more than python3-minimal): the local sandbox runs user code with /usr/bin/python3
# inside bubblewrap (sandbox.backend=local); the services themselves run on /usr/local/bin/python.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap python3 tini util-linux \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 athenic \
 && useradd --system --uid 10001 --gid athenic --home-dir /home/athenic --create-home \
      --shell /usr/sbin/nologin athenic
COPY --from=build /opt/athenic /opt/athenic
# at the path it was created at: a venv's bin/python and pyvenv.cfg name it
COPY --from=sandbox-python /opt/sandbox-python /opt/sandbox-python
ENV PATH=/opt/athenic/bin:$PATH \
    ATHENIC_SANDBOX_PYTHON_ENV=/opt/sandbox-python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
WORKDIR /home/athenic
# numeric (the chart's podSecurityContext uses the same 10001), so the kubelet can verify runAsNonRoot from the image alone
USER 10001:10001
EXPOSE 3000 9090
# a minimal init as PID 1: it forwards signals and reaps what is re-parented to it (the
# orchestrator also reaps its own runs' orphans, as a child subreaper)
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["athenic-api"]
