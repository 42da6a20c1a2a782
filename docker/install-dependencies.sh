#!/bin/sh
# Install the locked runtime dependencies of minivess (not the project itself) into /opt/venv.
#
#   install-dependencies.sh cpu INDEX   every package at its uv.lock version, except torch: the
#                                       CPU build of the locked torch version from INDEX, and
#                                       none of the CUDA libraries torch pulls from PyPI
#   install-dependencies.sh locked      uv.lock exactly as resolved (CUDA torch, for GPU hosts)
set -eu

variant="${1:-cpu}"
venv=/opt/venv
case "$variant" in
  locked)
    UV_PROJECT_ENVIRONMENT="$venv" uv sync --locked --no-dev --no-install-project
    ;;
  cpu)
    index="${2:?the CPU index URL of PyTorch is required}"
    uv venv "$venv"
    uv export --locked --no-dev --no-emit-project --no-hashes --no-header --no-annotate \
      --format requirements.txt > /tmp/locked.txt
    torch_version="$(sed -n -E 's/^torch==([^ ;]+).*/\1/p' /tmp/locked.txt)"
    grep -v -E '^(torch|triton|cuda-[a-z-]+|nvidia-(cu|nccl|nvjitlink|nvshmem|nvtx)[a-z0-9-]*)==' \
      /tmp/locked.txt > /tmp/requirements.txt
    uv pip install --python "$venv/bin/python" --no-deps --index-url "$index" \
      "torch==${torch_version}"
    uv pip install --python "$venv/bin/python" --no-deps -r /tmp/requirements.txt
    rm /tmp/locked.txt /tmp/requirements.txt
    ;;
  *)
    echo "install-dependencies.sh: TORCH must be cpu or locked, not '$variant'" >&2
    exit 2
    ;;
esac
