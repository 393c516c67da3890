#!/usr/bin/env bash
# Installs what the project needs on a fresh machine and nothing else: uv (from PyPI), then the
# locked workspace; Java 17 and Maven only if missing (Kafka's broker runs on them); Chromium only
# if missing (the widget's browser tests drive the distribution's package, never a download).
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
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is needed by the widget's browser tests (tests/e2e/test_advocate_widget.py)" >&2
    exit 1
  fi
fi
uv sync --frozen --quiet
