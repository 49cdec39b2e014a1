# One image for api, worker and beat.
#
# Reproducible: the base image is pinned to an exact version (bump it on purpose; append
# @sha256:<digest> as verified from your registry to pin its bytes too), and every Python
# dependency to its version in requirements.lock.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements.lock pyproject.toml setup.py MANIFEST.in README.md ./
COPY lrs ./lrs
COPY workers ./workers
# The built-in progress profiles: the build puts them inside the package (setup.py).
COPY profiles ./profiles
# Wheels of the package and of exactly the locked versions of its dependencies.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.lock .

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 lrs
COPY --from=build /wheels /wheels
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --no-index --find-links /wheels \
        --constraint /tmp/requirements.lock lrs \
    && rm -rf /wheels /tmp/requirements.lock
# Profiles ship in the package; LRS_PROFILES_DIR may still point at a mounted directory.
# Without LRS_MONGODB_URL the image runs on the embedded store in /data: mount a volume there
# (docker-compose.embedded.yml). No VOLUME instruction: it would give every container an
# anonymous volume, on MongoDB deployments too.
RUN mkdir /data && chown lrs /data
# `lrs beat` rewrites its schedule file: /tmp is writable in any container (a tmpfs when the
# root file system is read-only, as in docker-compose.yml). Nothing writes the working directory,
# which stays root's.
ENV PYTHONUNBUFFERED=1 \
    LRS_DATA_DIR=/data \
    LRS_BEAT_SCHEDULE=/tmp/celerybeat-schedule
WORKDIR /app
USER lrs
EXPOSE 8000
CMD ["lrs", "serve", "--host", "0.0.0.0", "--port", "8000"]
