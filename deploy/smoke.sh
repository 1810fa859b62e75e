#!/usr/bin/env bash
# Boot test of the container deployment with podman: build the API image from deploy/Dockerfile,
# start PostgreSQL + API, enroll and identify an LFW person through the API, restart the API and
# check the enrollment survived, then start a fresh API container with an empty index volume and
# check it rebuilds its index from PostgreSQL. Everything it starts is removed on exit.
#
#   sudo deploy/smoke.sh            # from the repository root; needs podman (+ runc), python3, curl
#
# What this does vs. docker-compose.yml on a normal Docker host:
#   * Same Dockerfile (target cpu), same store (PostgreSQL via postgresql+psycopg), same volumes
#     (PostgreSQL data + /var/lib/faces/index), same health checks (pg_isready, the image's
#     HEALTHCHECK on /readyz), same order (API only after the database is healthy).
#   * Host networking on non-default ports instead of compose's bridge network (this sandbox has
#     no usable container networking), so the API reaches PostgreSQL at 127.0.0.1:$SMOKE_PG_PORT.
#   * Without registry access, BASE_IMAGE is a local Debian bookworm image made with debootstrap
#     (built here when missing; python3.11 like python:3.11-slim), and PostgreSQL is Debian's
#     postgresql-15 in an image built from deploy/smoke/postgres.Containerfile rather than the
#     official postgres:16. With registry access: SMOKE_BASE_IMAGE=docker.io/library/python:3.11-slim
#     SMOKE_POSTGRES_IMAGE=docker.io/library/postgres:16.
#
# Knobs (environment): SMOKE_BASE_IMAGE, SMOKE_POSTGRES_IMAGE, SMOKE_API_PORT (18080),
# SMOKE_PG_PORT (55432), SMOKE_LFW_DIR (../shared/data/lfw), SMOKE_KEEP=1 keeps containers and
# volumes for inspection, SMOKE_REMOVE_IMAGES=1 also removes the built images.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_IMAGE=${SMOKE_BASE_IMAGE:-localhost/faces-base:bookworm}
POSTGRES_IMAGE=${SMOKE_POSTGRES_IMAGE:-localhost/faces-postgres:15}
API_IMAGE=${SMOKE_API_IMAGE:-localhost/faces-api:smoke}
API_PORT=${SMOKE_API_PORT:-18080}
PG_PORT=${SMOKE_PG_PORT:-55432}
LFW_DIR=${SMOKE_LFW_DIR:-${FACES_TEST_LFW_DIR:-$REPO_ROOT/../shared/data/lfw}}
PREFIX=faces-smoke
PG_PASSWORD=smoke-$RANDOM$RANDOM
PERSON=George_W_Bush
OTHER=Colin_Powell
COLLECTION=smoke
API_URL=http://127.0.0.1:$API_PORT
START=$(date +%s)
WORK=$(mktemp -d)

log() { printf '[smoke %4ss] %s\n' "$(($(date +%s) - START))" "$*"; }
fail() { log "FAIL: $*"; exit 1; }
# Podman without systemd complains about health-check timers on every run/stop; the checks are run
# explicitly below, so that noise is dropped.
podman() { command podman "$@" 2> >(grep -v 'systemd connection' >&2); }

# Podman defaults that work in unprivileged sandboxes: no default rlimits, runc when installed.
if [[ -z "${CONTAINERS_CONF:-}" ]]; then
    {
        printf '[containers]\ndefault_ulimits = []\n'
        if command -v runc >/dev/null; then printf '[engine]\nruntime = "runc"\n'; fi
    } > "$WORK/containers.conf"
    export CONTAINERS_CONF=$WORK/containers.conf
fi

cleanup() {
    local status=$?
    if [[ "${SMOKE_KEEP:-0}" == 1 ]]; then
        log "SMOKE_KEEP=1: leaving $PREFIX-* containers and volumes"
    else
        podman rm -f -t 5 "$PREFIX-api" "$PREFIX-db" >/dev/null 2>&1 || true
        podman volume rm -f "$PREFIX-pgdata" "$PREFIX-index" >/dev/null 2>&1 || true
        if [[ "${SMOKE_REMOVE_IMAGES:-0}" == 1 ]]; then
            podman rmi -f "$API_IMAGE" >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$WORK"
    if [[ $status == 0 ]]; then log "PASS in $(($(date +%s) - START)) s"; else log "exit status $status"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -d "$LFW_DIR/images/$PERSON" ]] || fail "LFW not found at $LFW_DIR (set SMOKE_LFW_DIR)"
command -v podman >/dev/null || fail "podman is not installed"

build_base_image() {
    # A Debian bookworm root file system with python3.11, venv and CA certificates, imported as an
    # image. pip inside the build trusts this host's CA bundle and pip.conf (proxies, mirrors).
    [[ $(id -u) == 0 ]] || fail "building $BASE_IMAGE needs root (debootstrap); or set SMOKE_BASE_IMAGE"
    command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"
    local rootfs=$WORK/rootfs
    log "building $BASE_IMAGE with debootstrap (a few minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "${SMOKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$WORK/debootstrap.log" \
        || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    if [[ -f /etc/pip.conf ]]; then
        cp /etc/pip.conf "$rootfs/etc/pip.conf"
        # Files the pip configuration points at (cert, constraint...) must exist in the image too.
        grep -oE '=\s*/[^[:space:]]+' /etc/pip.conf | sed -E 's/^=\s*//' | while read -r ref; do
            if [[ -f "$ref" ]]; then mkdir -p "$rootfs$(dirname "$ref")"; cp "$ref" "$rootfs$ref"; fi
        done
    fi
    tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(date +%s) + seconds))
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) >= deadline)); then log "$what: not reached within ${seconds}s"; return 1; fi
        sleep 1
    done
    log "$what"
}

api_healthy() { podman healthcheck run "$PREFIX-api"; }
db_healthy() { podman exec "$PREFIX-db" pg_isready -h 127.0.0.1 -p "$PG_PORT" -U faces -d faces; }

start_api() {
    podman run -d --name "$PREFIX-api" --network host \
        -e FACES_DATABASE_URL="postgresql+psycopg://faces:$PG_PASSWORD@127.0.0.1:$PG_PORT/faces" \
        -e FACES_PORT="$API_PORT" \
        -e FACES_LOG_LEVEL=INFO \
        -v "$PREFIX-index:/var/lib/faces/index" \
        -v "$WORK/enroll:/enroll:ro" \
        "$API_IMAGE" >/dev/null
    wait_until 120 "API healthy (image HEALTHCHECK: GET /readyz is 200)" api_healthy \
        || { podman logs --tail 50 "$PREFIX-api"; fail "the API did not become healthy"; }
}

identify() { # identify IMAGE -> prints the matched subject id, or "none"
    curl -sS --fail-with-body -F "image=@$1" "$API_URL/v1/collections/$COLLECTION/identify" \
        | python3 -c 'import json, sys; faces = json.load(sys.stdin)["faces"]; m = faces[0]["match"] if faces else None; print(m["subject_id"] if m else "none")'
}

face_count() {
    curl -sS --fail-with-body "$API_URL/v1/collections/$COLLECTION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["face_count"])'
}

check_identity() { # check_identity WHEN
    local probe=$LFW_DIR/images/$PERSON/${PERSON}_0010.jpg got
    got=$(identify "$probe")
    [[ "$got" == "$PERSON" ]] || fail "$1: identify(${PERSON}_0010.jpg) matched '$got', expected $PERSON"
    log "$1: identify(${PERSON}_0010.jpg, not enrolled) -> $got"
}

# Leftovers of an interrupted run would clash on names and ports.
podman rm -f -t 0 "$PREFIX-api" "$PREFIX-db" >/dev/null 2>&1 || true
podman volume rm -f "$PREFIX-pgdata" "$PREFIX-index" >/dev/null 2>&1 || true

# ---------------------------------------------------------------- build
if ! podman image exists "$BASE_IMAGE"; then
    [[ "$BASE_IMAGE" == localhost/* ]] || podman pull "$BASE_IMAGE" >/dev/null
    podman image exists "$BASE_IMAGE" || build_base_image
fi
if [[ "$POSTGRES_IMAGE" == localhost/faces-postgres:* ]]; then
    log "building $POSTGRES_IMAGE (deploy/smoke/postgres.Containerfile)"
    podman build -q --format docker --network host --build-arg BASE_IMAGE="$BASE_IMAGE" \
        -f "$REPO_ROOT/deploy/smoke/postgres.Containerfile" -t "$POSTGRES_IMAGE" "$REPO_ROOT" >/dev/null
fi
log "building $API_IMAGE (deploy/Dockerfile, target cpu, BASE_IMAGE=$BASE_IMAGE)"
podman build --format docker --network host --target cpu --build-arg BASE_IMAGE="$BASE_IMAGE" \
    -f "$REPO_ROOT/deploy/Dockerfile" -t "$API_IMAGE" "$REPO_ROOT" > "$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; fail "image build failed"; }
log "image built: $(podman image inspect "$API_IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

# ---------------------------------------------------------------- the enrollment tree
mkdir -p "$WORK/enroll/$PERSON" "$WORK/enroll/$OTHER"
cp "$LFW_DIR/images/$PERSON/${PERSON}_000"{1,2,3}.jpg "$WORK/enroll/$PERSON/"
cp "$LFW_DIR/images/$OTHER/${OTHER}_000"{1,2}.jpg "$WORK/enroll/$OTHER/"
echo "not a JPEG" > "$WORK/enroll/$OTHER/broken.jpg"
chmod -R a+rX "$WORK"   # the API container runs as uid 10001

# ---------------------------------------------------------------- start
log "starting PostgreSQL ($POSTGRES_IMAGE) on 127.0.0.1:$PG_PORT"
podman run -d --name "$PREFIX-db" --network host \
    -e POSTGRES_USER=faces -e POSTGRES_PASSWORD="$PG_PASSWORD" -e POSTGRES_DB=faces -e PGPORT="$PG_PORT" \
    -v "$PREFIX-pgdata:/var/lib/postgresql/data" "$POSTGRES_IMAGE" >/dev/null
wait_until 60 "PostgreSQL healthy (pg_isready)" db_healthy \
    || { podman logs --tail 30 "$PREFIX-db"; fail "PostgreSQL did not become healthy"; }
log "starting the API on $API_URL"
start_api
curl -sS "$API_URL/readyz"; echo

# ---------------------------------------------------------------- enroll + identify
log "faces enroll (inside the API container, through the API)"
podman exec "$PREFIX-api" faces enroll /enroll --collection "$COLLECTION" --base-url "$API_URL" \
    --no-progress --report /tmp/enroll-report.json || fail "faces enroll exited non-zero"
enrolled=$(face_count)
((enrolled >= 4)) || fail "only $enrolled faces enrolled out of 5 photos"
log "collection '$COLLECTION' holds $enrolled faces"
check_identity "after enrollment"
other=$(identify "$LFW_DIR/images/$OTHER/${OTHER}_0003.jpg")
[[ "$other" == "$OTHER" ]] || fail "identify(${OTHER}_0003.jpg) matched '$other', expected $OTHER"
log "identify(${OTHER}_0003.jpg, not enrolled) -> $other"

log "faces enroll again: everything already enrolled is skipped"
podman exec "$PREFIX-api" faces enroll /enroll --collection "$COLLECTION" --base-url "$API_URL" \
    --no-progress --report /tmp/enroll-report-2.json | tee "$WORK/rerun.txt"
grep -q "enrolled 0, skipped $enrolled," "$WORK/rerun.txt" || fail "the re-run did not skip the $enrolled enrolled files"
[[ $(face_count) == "$enrolled" ]] || fail "the re-run changed the face count"

# ---------------------------------------------------------------- restart
log "restarting the API container (SIGTERM: graceful shutdown writes index snapshots)"
podman restart -t 30 "$PREFIX-api" >/dev/null
wait_until 120 "API healthy again after restart" api_healthy \
    || { podman logs --tail 50 "$PREFIX-api"; fail "the API did not come back after the restart"; }
[[ $(face_count) == "$enrolled" ]] || fail "face count changed across the restart"
check_identity "after restart"

log "replacing the API container and wiping its index volume: the index is rebuilt from PostgreSQL"
podman rm -f -t 30 "$PREFIX-api" >/dev/null
podman volume rm -f "$PREFIX-index" >/dev/null
start_api
[[ $(face_count) == "$enrolled" ]] || fail "face count changed after the index rebuild"
check_identity "after index rebuild"
