# The official Triton 24.10 image plus what the served pipeline (brats_segment) needs in the python backend's
# Python: nibabel and scipy (numpy below 2, as the backend's stub was built with), and this package at the
# version whose pipeline is served. The model repository is mounted at /models (deploy/overlays/pipeline).
# A repository written without --pipeline runs in the stock image as before; this one serves both.
#
# Build from the repository root, the version tag equal to the exported pipeline's brats_triton_version
# (config.pbtxt of brats_segment; brats-client warns naming both when they differ):
#   docker build -f deploy/pipeline.Dockerfile --build-arg BRATS_TRITON_VERSION=0.1.0 \
#     -t brats-triton-pipeline:0.1.0 .
#   docker run --rm -p 8000:8000 -p 8001:8001 -v "$PWD/out/demo/model_repository:/models:ro" \
#     brats-triton-pipeline:0.1.0
FROM nvcr.io/nvidia/tritonserver:24.10-py3

ARG BRATS_TRITON_VERSION=0.1.0

# Python 3.10 (Ubuntu 22.04) runs the python backend's stub in this image: wheels for it, pinned (resolved for
# CPython 3.10 manylinux x86_64: numpy 1.26.4, nibabel 5.3.2, scipy 1.15.3).
RUN python3 -m pip install --no-cache-dir "numpy<2" nibabel==5.3.2 scipy==1.15.3

# The package without its client-side dependencies (tritonclient, matplotlib, tqdm: the pipeline needs none).
COPY pyproject.toml README.md /tmp/brats-triton/
COPY client /tmp/brats-triton/client
COPY export /tmp/brats-triton/export
COPY serve /tmp/brats-triton/serve
COPY demo /tmp/brats-triton/demo
RUN python3 -m pip install --no-cache-dir --no-deps /tmp/brats-triton \
    && rm -rf /tmp/brats-triton \
    && python3 -c "import importlib.metadata as m, sys; v = m.version('brats-triton'); \
sys.exit(0 if v == '${BRATS_TRITON_VERSION}' else f'brats-triton {v} installed, BRATS_TRITON_VERSION is ${BRATS_TRITON_VERSION}')" \
    && python3 -c "import nibabel, scipy.ndimage, brats_client.served, brats_client.identity"

ENV PYTHONDONTWRITEBYTECODE=1
# The image's non-root user (deploy/base runs as uid 1000 too).
USER triton-server
VOLUME ["/models"]
CMD ["tritonserver", "--model-repository=/models"]
