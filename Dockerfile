# syncwatch: the API with its scheduler (`syncwatch serve`), and with another command the dashboard
# (`syncwatch dashboard`), the broker consumers (`syncwatch consume`) and the simulator
# (`syncwatch simulate`). Used by docker-compose.yml; docs/deployment.md.
#
# Installed the way .ci/run's setup (scripts/setup.sh) installs the project: pip from the project's
# pyproject.toml (`pip install .`; without the editable flag and the dev tools).
FROM python:3.11-slim

# WeasyPrint (the weekly report as PDF) needs Pango and fonts; scripts/setup.sh installs
# fonts-dejavu-core for the same reason.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# What `pip install .` reads: the project file, the README it names, and the packages of
# [tool.setuptools.packages.find] (tests/integration/test_compose.py keeps this list complete).
COPY pyproject.toml README.md ./
COPY core ./core
COPY collector ./collector
COPY probes ./probes
COPY kpis ./kpis
COPY alerts ./alerts
COPY dashboard ./dashboard
COPY syncwatch ./syncwatch
RUN python -m pip install --upgrade pip \
    && python -m pip install . \
    && python -c "import syncwatch, core, collector"

# A user of its own, and the data directory it owns (the SQLite default and local files; the
# compose file puts the store on PostgreSQL).
RUN useradd --system --create-home --home-dir /home/syncwatch --uid 10001 syncwatch \
    && mkdir -p /var/lib/syncwatch \
    && chown syncwatch /var/lib/syncwatch
USER syncwatch
WORKDIR /home/syncwatch

ENV SYNCWATCH_HOST=0.0.0.0 \
    SYNCWATCH_PORT=8080 \
    SYNCWATCH_DATA_DIR=/var/lib/syncwatch
VOLUME ["/var/lib/syncwatch"]
EXPOSE 8080 8501

# Readiness of the API: /readyz answers 200 when the database does (503 otherwise). The dashboard,
# consumer and simulator services of docker-compose.yml replace this check with their own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4)"]

CMD ["syncwatch", "serve"]
