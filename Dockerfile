# registry-cache: the controller (`registry-cache run`) and the node agent (`registry-cache node-agent`).
#
#   docker build -t registry-cache:0.1.0 .
#   hack/image.sh        # the same without a Docker engine (buildah), with a base built from Debian
#                        # packages where the default base cannot be pulled (see docs/operations/deploying.md)
#
# Only the package and its runtime dependencies end up in the image: no tests, no hack/, no build tools, none of
# local-up (extension/local/: the distribution registry-cache-local, left out of the build context).
# The base image is pinned by digest (python:3.11.10-slim-bookworm) and every runtime dependency by
# constraints.txt with the hashes of its files (pip --require-hashes: what the index serves must be what was
# pinned), so that the same source builds the same image. Any BASE with `python3` (3.11+, with its
# venv module), `groupadd` and `useradd` works: hack/image.sh passes a Debian bookworm root file system with
# python3 and python3-venv where python:slim cannot be pulled. The program lives in a venv at /opt/venv on
# either base (Debian's own python3 is externally managed, PEP 668).
ARG BASE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# --- build: the project and its dependencies as wheels ------------------------------------------------------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY api ./api
COPY extension ./extension
# Behind a TLS-inspecting proxy or with a package index of your own, give pip a configuration and the CA
# bundle it names (`cert = /etc/pip-ca.crt`) as build secrets, which stay in no layer (hack/image.sh does
# this with the host's CA bundle):
#   docker build --secret id=pip-conf,src=pip.conf --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt .
RUN --mount=type=secret,id=pip-conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/etc/pip-ca.crt \
    python3 -m venv /opt/pip \
 && /opt/pip/bin/pip wheel --wheel-dir /wheels --require-hashes -r constraints.txt \
 && /opt/pip/bin/pip wheel --wheel-dir /wheels --no-deps . \
 && cp constraints.txt /wheels/

# --- runtime -----------------------------------------------------------------------------------------------
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot
# The wheels are bind-mounted from the build stage (BuildKit, and buildah >= 1.28): they stay in no layer.
# pip and setuptools, which the venv brings along, run nowhere at runtime: they go in the same step. The
# dependencies are installed by their hashes, then the project's own wheel alone; pip check: nothing is missing.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/venv \
 && pip install --no-index --find-links=/wheels --require-hashes -r /wheels/constraints.txt \
 && pip install --no-index --find-links=/wheels --no-deps registry-cache \
 && pip check \
 && pip uninstall --yes pip setuptools \
 && registry-cache --help >/dev/null
USER 65532:65532
ENTRYPOINT ["registry-cache"]
CMD ["run"]
