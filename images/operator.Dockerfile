# syntax=docker/dockerfile:1.7
# steno operator (Kopf): slim Python, steno[operator] only, no GPU libraries.
# Build from the repository root with images/build, which passes images/versions.env.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}

ARG STENO_UID

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY inference ./inference
COPY proto ./proto
COPY operator ./operator
COPY devtools ./devtools
RUN pip install ".[operator]" \
 && python -c "import steno_operator, kopf" \
 && useradd --uid "${STENO_UID}" --no-create-home --shell /usr/sbin/nologin steno
USER ${STENO_UID}
ENTRYPOINT ["steno-operator"]
