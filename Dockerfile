# lesionq container: CPU only, offline at run time, non-root, `lesionq` as entry point.
#   docker build -t lesionq .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out lesionq run /data /out participant
#   docker run --rm -v /data/out:/out -p 8000:8000 lesionq review --db /out/lesionq.sqlite \
#       --out /out --host 0.0.0.0 --port 8000
# PostgreSQL: pass --db postgresql+psycopg://user@host/db (the psycopg wheel brings libpq).
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# CPU build of torch (deepbet brain extraction); installed first so the project's
# dependency resolution does not pull a CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# pipelines/ and atlases/ are copied for the build: src/lesionq/data links to them, and the
# installed package holds them as package data (no LESIONQ_* variable needed at run time)
WORKDIR /opt/lesionq
COPY pyproject.toml README.md ./
COPY src ./src
COPY pipelines ./pipelines
COPY atlases ./atlases
COPY sample_data ./sample_data
RUN pip install . \
    && python -c "import lesionq, deepbet, SimpleITK, nipype, pydicom, sqlalchemy, alembic, fastapi" \
    && python -c "from lesionq.config import load_protocol; from lesionq.io.atlas import load_atlas; load_protocol('mesems_v1'); load_atlas()" \
    && (dcm2niix -v >/dev/null; test $? -eq 3)

# Run-time environment: no network, pinned BLAS / ITK threads (lesionq hands its own
# thread budget down with --n-procs), nipype's version check off.
ENV NIPYPE_NO_ET=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \
    HF_HUB_OFFLINE=1 \
    MPLBACKEND=Agg \
    HOME=/home/lesionq

RUN useradd --create-home --uid 1000 lesionq
USER lesionq
WORKDIR /home/lesionq

EXPOSE 8000
ENTRYPOINT ["lesionq"]
CMD ["--help"]
