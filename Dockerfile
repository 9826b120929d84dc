# shipdeck's image: `shipdeck serve` as a non-root user, the web console inside.
#   docker build -t shipdeck:0.1.0 .
#   docker run -p 8000:8000 -e SHIPDECK_DATABASE_URL=postgresql+psycopg://... shipdeck:0.1.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with shipdeck and its dependencies
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/shipdeck
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY runtimes ./runtimes
COPY tools ./tools
COPY agent ./agent
COPY api ./api
COPY evals ./evals
COPY prompts ./prompts
# Editable, so the packages stay next to the files they read at run time (prompts/, the
# console in api/static/, the migrations); /app is copied as is into the final stage.
RUN /opt/shipdeck/bin/pip install --upgrade pip \
 && /opt/shipdeck/bin/pip install -e . \
 && /opt/shipdeck/bin/python -c "import api.app, agent.prompts; agent.prompts.system_prompt()" \
 && test -f /app/api/static/index.html

# ---- runtime: no compiler, no pip cache, no root
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="shipdeck" \
      org.opencontainers.image.description="Chat-first release command center"
RUN groupadd --system --gid 10001 shipdeck \
 && useradd --system --uid 10001 --gid shipdeck --home-dir /var/lib/shipdeck \
      --create-home --shell /usr/sbin/nologin shipdeck
COPY --from=build /opt/shipdeck /opt/shipdeck
COPY --from=build /app /app
ENV PATH=/opt/shipdeck/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHIPDECK_HOST=0.0.0.0 \
    SHIPDECK_PORT=8000 \
    SHIPDECK_DATABASE_URL=sqlite:////var/lib/shipdeck/shipdeck.db
WORKDIR /var/lib/shipdeck
USER 10001:10001
EXPOSE 8000
# /healthz answers while the process does; readiness (/readyz, the database) is the
# orchestrator's business (see deploy/helm).
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["shipdeck"]
CMD ["serve"]
