# Parts2Whole studio: the web app in a container. CPU by default:
#   docker build -t parts2whole .
#   docker run --rm -p 7860:7860 -v parts2whole-data:/data parts2whole
# NVIDIA GPU (host with the NVIDIA Container Toolkit): use CUDA wheels of torch, run with --gpus all:
#   docker build -t parts2whole:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .
#   docker run --rm --gpus all -p 7860:7860 -v parts2whole-data:/data parts2whole:cuda
# (The CUDA wheels bundle the CUDA runtime, so the slim Python base works; to start from a CUDA image
#  instead, pass --build-arg BASE_IMAGE=<an image with Python 3.11>, e.g. one built FROM nvidia/cuda.)
# Weights are downloaded on first start into the /data volume; without internet the app starts on a
# tiny random model and says so in a banner.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/data/huggingface \
    P2W_WEIGHTS_DIR=/data/weights

# OpenCV (used by preprocessing) needs glib at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt ./
# torch first, from the index that matches the hardware; then the pinned rest (torch is then satisfied).
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && pip install -r requirements.txt

COPY . .
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /data \
    && chown -R app /data /app
USER app
# Optional: bake the photo examples into the image (needs Hub access while building; see the README).
ARG PREFETCH_EXAMPLES=0
RUN if [ "$PREFETCH_EXAMPLES" = "1" ]; then python -m parts2whole examples fetch; fi
VOLUME ["/data"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"
CMD ["python", "app.py"]
