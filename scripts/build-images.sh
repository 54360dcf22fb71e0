#!/usr/bin/env bash
# Build every image the compose fleet needs, from static Go binaries built on
# this host. No image registry is needed: all images are FROM scratch.
#
#   scripts/build-images.sh            # nats + jetflow images
#   scripts/build-images.sh nats       # only nats:2.15.2
#   scripts/build-images.sh jetflow    # only the jetflow-*:local images
#
# Images:
#   nats:2.15.2               nats-server from github.com/nats-io/nats-server/v2@v2.15.2
#                             (same name and entry point as the official image; if an
#                             official nats:2.15.2 is already present it is kept)
#   jetflow-dispatcher:local  ./cmd/dispatcher
#   jetflow-worker:local      ./cmd/worker
#   jetflow-cli:local         ./cmd/jetflow
#
# Binaries are left in bin/ (gitignored); bin/jetflow is the host CLI.
# Exit status: 0 all requested images built; 3 some jetflow binary's source
# (cmd/...) is missing and its image was skipped; anything else is a failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${JETFLOW_BIN_DIR:-$ROOT/bin}
NATS_VERSION=2.15.2
NATS_IMAGE=nats:$NATS_VERSION
LOCAL_LABEL=org.jetflow.local-build

what=${1:-all}
case $what in
  all|nats|jetflow) ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "usage: $0 [all|nats|jetflow]" >&2; exit 2 ;;
esac

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go not found in PATH"
command -v docker >/dev/null || die "docker not found in PATH"
docker info >/dev/null 2>&1 || die "docker engine not reachable (docker info failed)"

mkdir -p "$BIN_DIR"
CTX_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/jetflow-images.XXXXXX")
trap 'rm -rf "$CTX_ROOT"' EXIT

export CGO_ENABLED=0
GO_BUILD_FLAGS=(-trimpath -ldflags=-s\ -w)

# docker_build <image> <dockerfile> <context-dir> [build args...]
docker_build() {
  local image=$1 dockerfile=$2 ctx=$3; shift 3
  local old new
  old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  log "docker build $image"
  docker build -q -f "$dockerfile" -t "$image" "$@" "$ctx" >/dev/null
  new=$(docker image inspect -f '{{.Id}}' "$image")
  # Drop the image this build replaced (now untagged); ignore if still in use.
  if [ -n "$old" ] && [ "$old" != "$new" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
}

build_nats() {
  if docker image inspect "$NATS_IMAGE" >/dev/null 2>&1 &&
     [ "$(docker image inspect -f "{{index .Config.Labels \"$LOCAL_LABEL\"}}" "$NATS_IMAGE")" != "true" ]; then
    log "$NATS_IMAGE present and not a local build (official image?) — keeping it"
    return
  fi
  local bin=$BIN_DIR/nats-server
  if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "nats-server: v$NATS_VERSION" ]; then
    log "reusing $bin (v$NATS_VERSION)"
  else
    log "go install github.com/nats-io/nats-server/v2@v$NATS_VERSION (static)"
    GOBIN=$BIN_DIR go install "${GO_BUILD_FLAGS[@]}" \
      "github.com/nats-io/nats-server/v2@v$NATS_VERSION"
  fi
  local ctx=$CTX_ROOT/nats
  mkdir -p "$ctx"
  cp "$bin" "$ROOT/deploy/nats/nats-server.conf" "$ctx/"
  docker_build "$NATS_IMAGE" "$ROOT/deploy/nats/Dockerfile" "$ctx" \
    --label "$LOCAL_LABEL=true"
}

skipped=()
build_jetflow() {
  local entry src image
  # binary-name:image
  for entry in dispatcher:jetflow-dispatcher:local worker:jetflow-worker:local jetflow:jetflow-cli:local; do
    src=${entry%%:*}
    image=${entry#*:}
    if ! compgen -G "$ROOT/cmd/$src/*.go" >/dev/null; then
      printf 'ERROR: %s: no Go sources in cmd/%s — image %s NOT built (skipped)\n' \
        "$src" "$src" "$image" >&2
      skipped+=("$image")
      continue
    fi
    log "go build ./cmd/$src (static)"
    (cd "$ROOT" && go build "${GO_BUILD_FLAGS[@]}" -o "$BIN_DIR/$src" "./cmd/$src")
    local ctx=$CTX_ROOT/$src
    mkdir -p "$ctx"
    cp "$BIN_DIR/$src" "$ctx/"
    docker_build "$image" "$ROOT/deploy/Dockerfile" "$ctx" --build-arg "BIN=$src"
  done
}

case $what in
  all) build_nats; build_jetflow ;;
  nats) build_nats ;;
  jetflow) build_jetflow ;;
esac

if [ ${#skipped[@]} -gt 0 ]; then
  printf 'ERROR: skipped images (missing cmd/ sources): %s\n' "${skipped[*]}" >&2
  exit 3
fi
log "done"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' |
  grep -E '^(nats:|jetflow-)' >&2 || true
