# One image for api, worker and beat.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lrs ./lrs
COPY workers ./workers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 lrs
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY profiles /app/profiles
ENV LRS_PROFILES_DIR=/app/profiles \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER lrs
EXPOSE 8000
CMD ["lrs", "serve", "--host", "0.0.0.0", "--port", "8000"]
