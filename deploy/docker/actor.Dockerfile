# The CPU actor image: python 3.11, the CPU build of torch, then mouse.
# Build from the repository root (the context must hold pyproject.toml):
#   docker build -f deploy/docker/actor.Dockerfile -t REGISTRY/mouse-actor:TAG .
# Not built in CI (no Docker there); see deploy/README.md, "Kubernetes".
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# the CPU build of torch first: pyproject.toml's torch range is then already met, and
# pip never pulls the multi-GB CUDA build an actor has no use for
ARG TORCH_VERSION=2.13.0
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

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
