# One image for api, worker and beat.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY lrs ./lrs
COPY workers ./workers
# The built-in progress profiles: the build puts them inside the package (setup.py).
COPY profiles ./profiles
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 lrs
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Profiles ship in the package; LRS_PROFILES_DIR may still point at a mounted directory.
# Without LRS_MONGODB_URL the image runs on the embedded store, kept in a volume it may write.
RUN mkdir /data && chown lrs /data
ENV PYTHONUNBUFFERED=1 LRS_DATA_DIR=/data
VOLUME /data
WORKDIR /app
USER lrs
EXPOSE 8000
CMD ["lrs", "serve", "--host", "0.0.0.0", "--port", "8000"]
