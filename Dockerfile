# registry-cache: the controller (`registry-cache run`) and the node agent (`registry-cache node-agent`).
#
#   docker build -t registry-cache:0.1.0 .
#
# Only the package and its runtime dependencies end up in the image: no tests, no hack/, no build tools.
# The base image is pinned by digest (python:3.11.10-slim-bookworm) and every runtime dependency by
# constraints.txt, so that the same source builds the same image.
ARG BASE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# --- build: the project and its dependencies as wheels ------------------------------------------------------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY api ./api
COPY extension ./extension
# pyproject.toml maps the CRDs, examples and build scripts of local-up into the package; none of it runs in
# the image, so those folders stay empty here.
RUN mkdir -p manifests/crds manifests/seed-crds examples hack && pip wheel --wheel-dir /wheels -c constraints.txt . \
 && cp constraints.txt /wheels/

# --- runtime -----------------------------------------------------------------------------------------------
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot
# the wheels are bind-mounted from the build stage: they do not stay in a layer
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels -c /wheels/constraints.txt registry-cache \
 && registry-cache --help >/dev/null
USER 65532:65532
ENTRYPOINT ["registry-cache"]
CMD ["run"]
