# syntax=docker/dockerfile:1.7
#
# Corral's images. One image holds the `corral` command and runs every process: the router, the
# operator, and the runtime of CPU models. The `cuda` target adds the CUDA runtime libraries for
# the pods of GPU models; the operator picks it for Models with `resources.gpu`.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/corral-dev/corral:0.1.0 .
#   docker buildx build --platform linux/amd64 --target cuda -t ghcr.io/corral-dev/corral:0.1.0-cuda .
#
#   docker run --rm -p 8000:8000 ghcr.io/corral-dev/corral:0.1.0        # `corral serve`, the built-in test model
#   docker run --rm ghcr.io/corral-dev/corral:0.1.0 runtime --help
#
# Both run as the unprivileged user 65532 (the user model pods run as), with HOME=/tmp, and work
# with a read-only root filesystem. BuildKit is required (TARGETARCH, cache mounts).

ARG NODE_VERSION=22
# The CUDA runtime of the `cuda` target. node-llama-cpp's prebuilt CUDA backend needs CUDA 13
# (NVIDIA driver 580 or newer, Turing or newer GPUs); its fallback backend needs CUDA 12 (driver
# 525 or newer). With 12.x here the fallback is the one that loads, on the most clusters.
ARG CUDA_VERSION=12.9.1
ARG CUDA_BASE=ubuntu24.04

# ---- build: compile the TypeScript. The output does not depend on the architecture, so it is
# built once, on the build machine's platform. No prebuilt llama.cpp binaries are needed for it.
FROM --platform=$BUILDPLATFORM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts --omit=optional --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY common ./common
COPY runtime ./runtime
COPY router ./router
COPY operator ./operator
RUN node node_modules/typescript/bin/tsc -p tsconfig.build.json

# ---- deps: the production dependencies for the target platform, with node-llama-cpp's prebuilt
# binaries (optional dependencies, picked by npm for the platform). Install scripts are skipped:
# node-llama-cpp's only checks for binaries, and the runtime never builds llama.cpp. Removed: the
# llama.cpp sources (34 MB, for building from source) and TypeScript (for node-llama-cpp's CLI).
FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/node-llama-cpp/llama/gitRelease.bundle node_modules/typescript

# CPU: only this architecture's CPU binaries.
FROM deps AS deps-cpu
ARG TARGETARCH
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) keep=linux-x64 ;; \
      arm64) keep=linux-arm64 ;; \
      *) echo "unsupported architecture: $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    cd node_modules/@node-llama-cpp; \
    for dir in *; do [ "$dir" = "$keep" ] || rm -rf "$dir"; done; \
    test -f "$keep/package.json"

# CUDA: the CUDA binaries (linux-x64-cuda: CUDA 13; linux-x64-cuda-ext: the CUDA 12 fallback),
# and the CPU ones for pods that run with --gpu off.
FROM deps AS deps-cuda
RUN set -eu; \
    cd node_modules/@node-llama-cpp; \
    for dir in *; do \
      case "$dir" in linux-x64|linux-x64-cuda|linux-x64-cuda-ext) ;; *) rm -rf "$dir" ;; esac; \
    done; \
    test -f linux-x64/package.json && test -f linux-x64-cuda/package.json && test -f linux-x64-cuda-ext/package.json

# ---- cuda: the runtime of GPU models. NVIDIA's base image (CUDA runtime, the variables the NVIDIA
# container toolkit reads) plus cuBLAS, the one CUDA library llama.cpp needs besides it; the
# driver (libcuda) comes from the node through the toolkit.
FROM nvidia/cuda:${CUDA_VERSION}-base-${CUDA_BASE} AS cuda
ARG CUDA_VERSION
RUN set -eu; \
    major="${CUDA_VERSION%%.*}"; minor="${CUDA_VERSION#*.}"; minor="${minor%%.*}"; \
    apt-get update; \
    apt-get install -y --no-install-recommends "libcublas-${major}-${minor}"; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 65532 nonroot; \
    useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin nonroot
# The same Node as the CPU image, at the same path, so that one launcher serves both.
COPY --from=deps /usr/local/bin/node /nodejs/bin/node
WORKDIR /app
COPY package.json ./
COPY crds ./crds
COPY catalog ./catalog
COPY --from=deps-cuda /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --chmod=0755 docker/corral /usr/local/bin/corral
ENV NODE_ENV=production \
    HOME=/tmp \
    PATH=/usr/local/bin:/nodejs/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="corral (CUDA)" \
      org.opencontainers.image.description="Corral's runtime for GPU models: corral with the CUDA runtime libraries" \
      org.opencontainers.image.source="https://github.com/corral-dev/corral" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["corral"]
CMD ["runtime", "--help"]

# ---- cpu (the default target): distroless Node (no shell, no package manager), the router, the
# operator and the CPU runtime.
FROM gcr.io/distroless/nodejs${NODE_VERSION}-debian12:nonroot AS cpu
WORKDIR /app
COPY package.json ./
COPY crds ./crds
COPY catalog ./catalog
COPY --from=deps-cpu /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --chmod=0755 docker/corral /usr/local/bin/corral
ENV NODE_ENV=production \
    HOME=/tmp \
    PATH=/usr/local/bin:/nodejs/bin:/usr/bin:/bin
LABEL org.opencontainers.image.title="corral" \
      org.opencontainers.image.description="Kubernetes-native LLM serving: router, operator and CPU runtime" \
      org.opencontainers.image.source="https://github.com/corral-dev/corral" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["corral"]
CMD ["serve"]
