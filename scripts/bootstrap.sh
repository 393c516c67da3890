#!/usr/bin/env bash
# Installs what the project needs on a fresh machine and nothing else: uv (from PyPI), then the
# locked workspace; Java 17 and Maven only if missing (Kafka's broker runs on them).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  else
    echo "Java 17+ and Maven are needed to run the local Kafka broker" >&2
    exit 1
  fi
fi
uv sync --frozen --quiet
