FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lrs ./lrs
COPY workers ./workers
COPY profiles ./profiles
RUN pip install --no-cache-dir . && useradd --create-home lrs
USER lrs
ENV LRS_PROFILES_DIR=/app/profiles
EXPOSE 8000
CMD ["lrs", "serve", "--host", "0.0.0.0", "--port", "8000"]
