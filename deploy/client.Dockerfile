# The client alone (torch-free: numpy, nibabel, scipy, tritonclient[grpc]) for deploy/segment-job.
# Build from the repository root:  docker build -f deploy/client.Dockerfile -t brats-client:0.1.0 .
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY client client
COPY export export
COPY serve serve
COPY demo demo
# The package's core dependencies are the client's; no extras (they would pull torch and the server runtimes).
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
USER 1000:1000
ENTRYPOINT ["brats-client"]
