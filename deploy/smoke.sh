#!/usr/bin/env bash
# Boot test of the container deployment: build the API image from deploy/Dockerfile, start
# PostgreSQL + API, enroll and identify LFW people through the API (`faces enroll` inside the API
# container, identify with curl), restart the API and check the enrollment survived, then recreate
# the containers with an empty index volume and check the index is rebuilt from PostgreSQL.
# Everything it starts is removed on exit (trap); built images are kept as a build cache.
#
#   deploy/smoke.sh                          # plain podman, host networking (default)
#   SMOKE_DRIVER=compose deploy/smoke.sh     # the real docker-compose.yml (podman-compose or docker compose)
#   SMOKE_TOPOLOGY=milvus deploy/smoke.sh    # Milvus + two API replicas (deploy/smoke/milvus-topology.sh)
#
# Needs podman (or docker for SMOKE_DRIVER=compose with `docker compose`), curl, python3 and LFW.
#
# What the two drivers run vs. `docker compose up` on a normal Docker host:
#   * podman: the same image (Dockerfile target cpu), store (PostgreSQL via postgresql+psycopg),
#     volumes (PostgreSQL data, /var/lib/faces/index) and health checks (pg_isready, the image's
#     HEALTHCHECK on /readyz), API started only once PostgreSQL is healthy - but with `podman run`
#     and host networking on non-default ports instead of compose's bridge network and service names.
#   * compose: docker-compose.yml itself, plus an override that mounts the enrollment tree. With
#     podman < 4.6, podman-compose cannot wait for `condition: service_healthy`: the API may start
#     before PostgreSQL accepts connections, exit, and be restarted by `restart: unless-stopped`.
#   * Without registry access the images differ: BASE_IMAGE is a local Debian bookworm image made
#     with debootstrap (built here when missing; python 3.11 like python:3.11-slim) and PostgreSQL
#     is Debian's postgresql-15 built from deploy/smoke/postgres.Containerfile instead of the
#     official postgres:16. With registry access set SMOKE_BASE_IMAGE=docker.io/library/python:3.11-slim
#     and SMOKE_POSTGRES_IMAGE=docker.io/library/postgres:16.
#
# Knobs (environment): SMOKE_TOPOLOGY (postgres|milvus; milvus: podman driver only, see
# deploy/smoke/milvus-topology.sh for its own knobs), SMOKE_DRIVER (podman|compose), SMOKE_COMPOSE (compose command; default
# podman-compose if installed, else "docker compose"), SMOKE_BASE_IMAGE, SMOKE_POSTGRES_IMAGE,
# SMOKE_API_PORT (18080), SMOKE_PG_PORT (55432, podman driver), SMOKE_LFW_DIR (../shared/data/lfw),
# SMOKE_KEEP=1 keeps containers and volumes for inspection.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRIVER=${SMOKE_DRIVER:-podman}
TOPOLOGY=${SMOKE_TOPOLOGY:-postgres}
BASE_IMAGE=${SMOKE_BASE_IMAGE:-localhost/faces-base:bookworm}
POSTGRES_IMAGE=${SMOKE_POSTGRES_IMAGE:-localhost/faces-postgres:15}
API_IMAGE=${SMOKE_API_IMAGE:-localhost/faces-api:smoke}
API_PORT=${SMOKE_API_PORT:-18080}
PG_PORT=${SMOKE_PG_PORT:-55432}
LFW_DIR=${SMOKE_LFW_DIR:-${FACES_TEST_LFW_DIR:-$REPO_ROOT/../shared/data/lfw}}
PROJECT=faces-smoke
PG_PASSWORD=smoke$RANDOM$RANDOM
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
podman() { command podman "$@" 2> >(grep -v -e 'systemd connection' -e 'connect to syslog' >&2); }

# Podman defaults that work in unprivileged sandboxes: no default rlimits, runc when installed.
if [[ -z "${CONTAINERS_CONF:-}" ]] && command -v podman >/dev/null; then
    {
        printf '[containers]\ndefault_ulimits = []\n'
        if command -v runc >/dev/null; then printf '[engine]\nruntime = "runc"\n'; fi
    } > "$WORK/containers.conf"
    export CONTAINERS_CONF=$WORK/containers.conf
fi

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND... (returns 1 on timeout)
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(date +%s) + seconds))
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) >= deadline)); then log "$what: not reached within ${seconds}s"; return 1; fi
        sleep 1
    done
    log "$what"
}

readyz() { curl -sf "$API_URL/readyz"; }

# ---------------------------------------------------------------- driver: plain podman, host network
podman_db_healthy() { podman exec "$PROJECT-db" pg_isready -h 127.0.0.1 -p "$PG_PORT" -U faces -d faces; }
podman_api_healthy() { podman healthcheck run "$PROJECT-api"; }  # the image's HEALTHCHECK

podman_start_api() {
    podman run -d --name "$PROJECT-api" --network host --restart unless-stopped \
        -e FACES_DATABASE_URL="postgresql+psycopg://faces:$PG_PASSWORD@127.0.0.1:$PG_PORT/faces" \
        -e FACES_PORT="$API_PORT" \
        -v "$PROJECT-index:/var/lib/faces/index" \
        -v "$WORK/enroll:/enroll:ro" \
        "$API_IMAGE" >/dev/null
    wait_until 120 "API healthy (image HEALTHCHECK: GET /readyz is 200)" podman_api_healthy \
        || { podman logs --tail 50 "$PROJECT-api"; fail "the API did not become healthy"; }
}

podman_up() {
    log "starting PostgreSQL ($POSTGRES_IMAGE) on 127.0.0.1:$PG_PORT"
    podman run -d --name "$PROJECT-db" --network host --restart unless-stopped \
        -e POSTGRES_USER=faces -e POSTGRES_PASSWORD="$PG_PASSWORD" -e POSTGRES_DB=faces -e PGPORT="$PG_PORT" \
        -v "$PROJECT-pgdata:/var/lib/postgresql/data" "$POSTGRES_IMAGE" >/dev/null
    wait_until 60 "PostgreSQL healthy (pg_isready)" podman_db_healthy \
        || { podman logs --tail 30 "$PROJECT-db"; fail "PostgreSQL did not become healthy"; }
    log "starting the API on $API_URL"
    podman_start_api
}

podman_restart_api() {
    podman restart -t 30 "$PROJECT-api" >/dev/null
    wait_until 120 "API healthy again" podman_api_healthy \
        || { podman logs --tail 50 "$PROJECT-api"; fail "the API did not come back"; }
}

podman_recreate_with_empty_index() {
    podman rm -f -t 30 "$PROJECT-api" >/dev/null
    podman volume rm -f "$PROJECT-index" >/dev/null
    podman_start_api
}

podman_exec_api() { podman exec "$PROJECT-api" "$@"; }
podman_api_url_inside=$API_URL   # host network: the container listens on the host port

podman_down() {
    podman rm -f -t 5 "$PROJECT-api" "$PROJECT-db" >/dev/null 2>&1 || true
    podman volume rm -f "$PROJECT-pgdata" "$PROJECT-index" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- driver: docker-compose.yml
if [[ -n "${SMOKE_COMPOSE:-}" ]]; then
    read -r -a COMPOSE_TOOL <<< "$SMOKE_COMPOSE"
elif command -v podman-compose >/dev/null; then
    COMPOSE_TOOL=(podman-compose)
else
    COMPOSE_TOOL=(docker compose)
fi
if [[ "${COMPOSE_TOOL[0]}" == docker && $DRIVER == compose ]]; then ENGINE=docker; else ENGINE=podman; fi
# Podman writes OCI images unless told otherwise, and OCI has no HEALTHCHECK.
if [[ $ENGINE == podman ]]; then BUILD_FORMAT=(--format docker); export BUILDAH_FORMAT=docker; else BUILD_FORMAT=(); fi

compose() {
    "${COMPOSE_TOOL[@]}" --env-file "$WORK/compose.env" -p "$PROJECT" \
        -f "$REPO_ROOT/docker-compose.yml" -f "$WORK/compose.override.yml" "$@" \
        2> >(grep -v -e 'systemd connection' -e 'connect to syslog' >&2)
}

compose_prepare() {
    # What an operator's .env would hold, pointed at the smoke images and a non-default port.
    cat > "$WORK/compose.env" <<EOF
POSTGRES_PASSWORD=$PG_PASSWORD
POSTGRES_IMAGE=$POSTGRES_IMAGE
BASE_IMAGE=$BASE_IMAGE
API_IMAGE=$API_IMAGE
API_BIND=127.0.0.1:$API_PORT
API_ENV_FILE=$WORK/compose.env
FACES_LOG_LEVEL=INFO
EOF
    cat > "$WORK/compose.override.yml" <<EOF
services:
  api:
    volumes:
      - $WORK/enroll:/enroll:ro
EOF
}

compose_up() {
    log "${COMPOSE_TOOL[*]} up -d (docker-compose.yml, PostgreSQL $POSTGRES_IMAGE)"
    compose up -d >"$WORK/compose-up.log" 2>&1 || { tail -30 "$WORK/compose-up.log"; fail "compose up failed"; }
    wait_until 180 "API ready (GET /readyz is 200 on $API_URL)" readyz \
        || { compose logs --tail 50 api; fail "the API did not become ready"; }
}

compose_restart_api() {
    compose restart api >/dev/null
    sleep 2
    wait_until 120 "API ready again" readyz || { compose logs --tail 50 api; fail "the API did not come back"; }
}

compose_recreate_with_empty_index() {
    compose down >/dev/null 2>&1   # containers and network go, volumes stay
    $ENGINE volume rm -f "${PROJECT}_index" >/dev/null
    compose_up
}

compose_exec_api() { compose exec -T api "$@"; }
compose_api_url_inside=http://127.0.0.1:8000

compose_down() { compose down -v >/dev/null 2>&1 || true; }

# ---------------------------------------------------------------- checks shared by both drivers
identify_match() { # identify_match API_URL IMAGE -> per face found: "SUBJECT_ID FACE_ID DISTANCE" of its match, or "none"
    curl -sS --fail-with-body -F "image=@$2" "$1/v1/collections/$COLLECTION/identify" \
        | python3 -c 'import json, sys; ms = [f["match"] for f in json.load(sys.stdin)["faces"]] or [None]; print("\n".join("%s %s %.4f" % (m["subject_id"], m["face_id"], m["distance"]) if m else "none" for m in ms))'
}

identify() { identify_match "$API_URL" "$1" | sed -n '1{s/ .*//;p}'; } # identify IMAGE -> the first face's subject id, or "none"

face_count() {
    curl -sS --fail-with-body "$API_URL/v1/collections/$COLLECTION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["face_count"])'
}

check_identity() { # check_identity WHEN PERSON N: an image of PERSON that was not enrolled
    local probe=$LFW_DIR/images/$2/${2}_$(printf %04d "$3").jpg got
    got=$(identify "$probe")
    [[ "$got" == "$2" ]] || fail "$1: identify($(basename "$probe")) matched '$got', expected $2"
    log "$1: identify($(basename "$probe"), not enrolled) -> $got"
}

cleanup() {
    local status=$?
    if [[ "${SMOKE_KEEP:-0}" == 1 ]]; then
        log "SMOKE_KEEP=1: leaving the $PROJECT containers and volumes"
    else
        "$TEARDOWN"
    fi
    rm -rf "$WORK"
    if [[ $status == 0 ]]; then log "PASS ($TOPOLOGY topology, $DRIVER driver) in $(($(date +%s) - START)) s"; else log "exit status $status"; fi
}

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
    tar -C "$rootfs" -c . | $ENGINE import - "$BASE_IMAGE" > "$WORK/import.log" 2>&1 \
        || { tail -20 "$WORK/import.log"; fail "importing the root file system failed"; }
    rm -rf "$rootfs"
}

# ---------------------------------------------------------------- run
case "$DRIVER" in
    podman | compose) ;;
    *) fail "SMOKE_DRIVER must be podman or compose, not '$DRIVER'" ;;
esac
case "$TOPOLOGY" in
    postgres) TEARDOWN=${DRIVER}_down ;;
    milvus)
        [[ $DRIVER == podman ]] || fail "SMOKE_TOPOLOGY=milvus runs with the podman driver only"
        # shellcheck source=deploy/smoke/milvus-topology.sh
        source "$REPO_ROOT/deploy/smoke/milvus-topology.sh"
        TEARDOWN=milvus_topology_down
        ;;
    *) fail "SMOKE_TOPOLOGY must be postgres or milvus, not '$TOPOLOGY'" ;;
esac
[[ -d "$LFW_DIR/images/$PERSON" ]] || fail "LFW not found at $LFW_DIR (set SMOKE_LFW_DIR)"
command -v "$ENGINE" >/dev/null || fail "$ENGINE is not installed"
command -v "${COMPOSE_TOOL[0]}" >/dev/null || [[ $DRIVER == podman ]] || fail "${COMPOSE_TOOL[0]} is not installed"
if [[ $ENGINE == docker ]]; then podman() { command docker "$@"; }; fi

trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ $DRIVER == compose ]]; then compose_prepare; fi
"$TEARDOWN"   # leftovers of an interrupted run would clash on names and ports

log "building images"
if ! $ENGINE image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    [[ "$BASE_IMAGE" == localhost/* ]] || $ENGINE pull "$BASE_IMAGE" >/dev/null
    $ENGINE image inspect "$BASE_IMAGE" >/dev/null 2>&1 || build_base_image
fi
if [[ "$POSTGRES_IMAGE" == localhost/faces-postgres:* ]]; then
    $ENGINE build "${BUILD_FORMAT[@]}" --network host --build-arg BASE_IMAGE="$BASE_IMAGE" \
        -f "$REPO_ROOT/deploy/smoke/postgres.Containerfile" -t "$POSTGRES_IMAGE" "$REPO_ROOT" \
        > "$WORK/build-postgres.log" 2>&1 || { tail -30 "$WORK/build-postgres.log"; fail "PostgreSQL image build failed"; }
    log "built $POSTGRES_IMAGE (deploy/smoke/postgres.Containerfile)"
fi
if [[ $DRIVER == compose ]]; then
    # compose's own build section (context, dockerfile, target, BASE_IMAGE arg from the env file).
    compose build api > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "compose build failed"; }
else
    $ENGINE build "${BUILD_FORMAT[@]}" --network host --target cpu --build-arg BASE_IMAGE="$BASE_IMAGE" \
        -f "$REPO_ROOT/deploy/Dockerfile" -t "$API_IMAGE" "$REPO_ROOT" > "$WORK/build.log" 2>&1 \
        || { tail -40 "$WORK/build.log"; fail "image build failed"; }
fi
log "built $API_IMAGE (deploy/Dockerfile target cpu, BASE_IMAGE=$BASE_IMAGE):" \
    "$($ENGINE image inspect "$API_IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
if [[ $TOPOLOGY == milvus ]]; then
    milvus_topology_build
    milvus_topology_run
    exit 0
fi

# The enrollment tree: 3 + 2 LFW photos and a text file pretending to be a JPEG.
mkdir -p "$WORK/enroll/$PERSON" "$WORK/enroll/$OTHER"
cp "$LFW_DIR/images/$PERSON/${PERSON}_000"{1,2,3}.jpg "$WORK/enroll/$PERSON/"
cp "$LFW_DIR/images/$OTHER/${OTHER}_000"{1,2}.jpg "$WORK/enroll/$OTHER/"
echo "not a JPEG" > "$WORK/enroll/$OTHER/broken.jpg"
chmod -R a+rX "$WORK"   # the API container runs as uid 10001

"${DRIVER}_up"
readyz; echo

log "faces enroll (inside the API container, through the API)"
inside_url_var=${DRIVER}_api_url_inside
"${DRIVER}_exec_api" faces enroll /enroll --collection "$COLLECTION" --base-url "${!inside_url_var}" \
    --no-progress --report /tmp/enroll-report.json | tee "$WORK/enroll.txt" || fail "faces enroll exited non-zero"
enrolled=$(face_count)
((enrolled >= 4)) || fail "only $enrolled faces enrolled out of 5 photos"
grep -q "rejected 1," "$WORK/enroll.txt" || fail "broken.jpg was not reported as rejected"
log "collection '$COLLECTION' holds $enrolled faces"
check_identity "after enrollment" "$PERSON" 10
check_identity "after enrollment" "$OTHER" 3

log "faces enroll again: everything already enrolled is skipped"
"${DRIVER}_exec_api" faces enroll /enroll --collection "$COLLECTION" --base-url "${!inside_url_var}" \
    --no-progress --report /tmp/enroll-report-2.json | tee "$WORK/rerun.txt" || fail "faces enroll exited non-zero"
grep -q "enrolled 0, skipped $enrolled," "$WORK/rerun.txt" || fail "the re-run did not skip the $enrolled enrolled files"
[[ $(face_count) == "$enrolled" ]] || fail "the re-run changed the face count"

log "restarting the API (SIGTERM: graceful shutdown writes index snapshots)"
"${DRIVER}_restart_api"
[[ $(face_count) == "$enrolled" ]] || fail "face count changed across the restart"
check_identity "after restart" "$PERSON" 10

log "recreating the API with an empty index volume: the index is rebuilt from PostgreSQL"
"${DRIVER}_recreate_with_empty_index"
[[ $(face_count) == "$enrolled" ]] || fail "face count changed after the index rebuild"
check_identity "after index rebuild" "$PERSON" 10
check_identity "after index rebuild" "$OTHER" 3
