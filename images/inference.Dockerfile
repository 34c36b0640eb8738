# syntax=docker/dockerfile:1.7
# steno inference server (`steno serve`, job mode and serving pool) for NVIDIA GPUs.
# Build from the repository root with images/build, which passes images/versions.env.
ARG CUDA_IMAGE
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION
ARG TORCH_INDEX_URL
ARG FLASH_ATTN_WHEEL_URL
ARG STENO_UID

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/steno \
    PATH=/opt/steno/bin:$PATH \
    # Converted models live on a mounted volume (or are pre-staged there), never in the image.
    STENO_CACHE_DIR=/var/cache/steno \
    HF_HUB_OFFLINE=1

# Ubuntu 24.04's own Python 3.12; nothing else from the OS is needed (PyAV carries FFmpeg).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.12 -m venv /opt/steno

# torch first, from its CUDA index, so nothing later can replace it with another build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
 && pip install "${FLASH_ATTN_WHEEL_URL}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY inference ./inference
COPY proto ./proto
COPY operator ./operator
COPY devtools ./devtools
# [onnx]: the same image serves CPU pools on ONNX Runtime (charts/steno/examples/cpu-pool.yaml).
RUN pip install ".[inference,diarization,onnx]" "torch==${TORCH_VERSION}" \
 && python -c "import torch, flash_attn, onnxruntime, steno_inference; print(torch.__version__, flash_attn.__version__, onnxruntime.__version__)"

RUN useradd --uid "${STENO_UID}" --no-create-home --shell /usr/sbin/nologin steno \
 && mkdir -p /var/cache/steno && chown "${STENO_UID}" /var/cache/steno
USER ${STENO_UID}
WORKDIR /var/cache/steno
EXPOSE 50051 9090
ENTRYPOINT ["steno"]
CMD ["serve", "--host", "0.0.0.0", "--port", "50051"]
