# The CUDA learner image: a CUDA runtime base, python 3.11 (deadsnakes), a CUDA build of
# torch, then mouse. Build from the repository root:
#   docker build -f deploy/docker/learner.Dockerfile -t REGISTRY/mouse-learner:TAG .
# Not built in CI (no Docker there); see deploy/README.md, "Kubernetes".
#
# The torch wheel brings its own CUDA libraries; what the nodes must have is an NVIDIA
# driver new enough for that CUDA version (and the NVIDIA device plugin). Pick a wheel
# that matches the driver with TORCH_INDEX_URL, e.g.
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# (default: PyPI's torch, the CUDA build), and a base of the same CUDA version with
# CUDA_BASE.
ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu22.04
FROM ${CUDA_BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10)
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from PyPI (the CUDA build) or the index given; pyproject.toml's torch
# range is then already met and `pip install` below keeps this build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"

# only what the package needs (no .venv, runs/ or .git from the context)
COPY pyproject.toml README.md /tmp/mouse/
COPY mouse /tmp/mouse/mouse
COPY actors /tmp/mouse/actors
COPY learner /tmp/mouse/learner
RUN pip install /tmp/mouse && rm -rf /tmp/mouse

# uid 1000: the pods' runAsUser/fsGroup in deploy/k8s
RUN useradd --create-home --uid 1000 --user-group mouse
USER 1000
WORKDIR /home/mouse
CMD ["mouse", "--help"]
