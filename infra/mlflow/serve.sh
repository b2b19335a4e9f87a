#!/bin/sh
# Start the MLflow tracking server from environment variables (Kubernetes Secret / compose
# .env); the database password never appears in a manifest or on the command line.
#   MLFLOW_DB_USER, MLFLOW_DB_PASSWORD (URL-encoded if it has special characters),
#   MLFLOW_DB_HOST, MLFLOW_DB_PORT (5432), MLFLOW_DB_NAME (mlflow),
#   MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/prefix), MLFLOW_WORKERS (2),
#   MLFLOW_SERVER_ALLOWED_HOSTS (Host headers to accept, e.g. mlflow,mlflow.default.svc.cluster.local:5000),
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an IAM role, MLFLOW_S3_ENDPOINT_URL for MinIO.
set -eu
: "${MLFLOW_DB_USER:?set MLFLOW_DB_USER}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"
: "${MLFLOW_DB_HOST:?set MLFLOW_DB_HOST}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/prefix)}"
MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://${MLFLOW_DB_USER}:${MLFLOW_DB_PASSWORD}@${MLFLOW_DB_HOST}:${MLFLOW_DB_PORT:-5432}/${MLFLOW_DB_NAME:-mlflow}"
export MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
export MLFLOW_WORKERS="${MLFLOW_WORKERS:-2}"
# Options left out of argv are read from MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION,
# MLFLOW_WORKERS and MLFLOW_SERVER_ALLOWED_HOSTS by `mlflow server` itself.
exec mlflow server --host 0.0.0.0 --port 5000 --serve-artifacts
