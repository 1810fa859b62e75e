# shellcheck shell=bash
# Sourced by deploy/smoke.sh when SMOKE_TOPOLOGY=milvus (podman driver): the topology of
# deploy/docker-compose.milvus.yml with local images. PostgreSQL, one Milvus 2.3.5 standalone server
# (deploy/smoke/milvus.Containerfile: the PyPI wheel's server in the Debian base, standing in for
# etcd + MinIO + milvusdb/milvus), and two API replicas A and B (FACES_VECTOR_BACKEND=milvus) on
# distinct ports, every container on the host network, every server on 127.0.0.1 (except Milvus's
# gRPC and metrics listeners, which bind all interfaces in 2.3.5 and have no setting to change it).
# No reverse proxy: the scenario needs to address each replica.
#
# Scenario: enroll LFW photos through A and identify each one through B at once (read-your-writes
# across replicas: B must return the face id A acknowledged); identify unseen photos through B;
# SIGKILL A, identify through B again and enroll through B; stop Milvus (B's /readyz is 503, identify
# answers 503, an enrollment is acknowledged as stored with searchable=false), start it again, wait for B to
# repair Milvus from PostgreSQL; then every acknowledged face must be found by identify on its own
# photo, the face stored during the outage must be found too, and PostgreSQL, Milvus and the API must
# agree on the count. Finally A is started again and must see what B wrote (and B what A writes).
# Uses smoke.sh's variables and helpers (log, fail, wait_until, podman, identify_match...).

MILVUS_IMAGE=${SMOKE_MILVUS_IMAGE:-localhost/faces-milvus:2.3.5}
MILVUS_PORT=${SMOKE_MILVUS_PORT:-19540}
API_B_PORT=${SMOKE_API_B_PORT:-18081}
A_URL=http://127.0.0.1:$API_PORT
B_URL=http://127.0.0.1:$API_B_PORT
TOPOLOGY_PEOPLE=(George_W_Bush Colin_Powell Tony_Blair Donald_Rumsfeld Gerhard_Schroeder)
ENROLLED_PER_PERSON=3   # photos 1..3 enrolled, 10 and 11 used as unseen probes
RECONCILE_S=10          # FACES_INDEX_RECONCILE_INTERVAL_S on the replicas (default 60)

milvus_topology_build() {
    $ENGINE build "${BUILD_FORMAT[@]}" --network host --build-arg BASE_IMAGE="$BASE_IMAGE" \
        -f "$REPO_ROOT/deploy/smoke/milvus.Containerfile" -t "$MILVUS_IMAGE" "$REPO_ROOT" \
        > "$WORK/build-milvus.log" 2>&1 || { tail -30 "$WORK/build-milvus.log"; fail "Milvus image build failed"; }
    log "built $MILVUS_IMAGE (deploy/smoke/milvus.Containerfile, milvus==2.3.5 wheel)"
}

milvus_topology_down() {
    podman rm -f -t 10 "$PROJECT-api-a" "$PROJECT-api-b" "$PROJECT-milvus" "$PROJECT-db" >/dev/null 2>&1 || true
    podman volume rm -f "$PROJECT-pgdata" "$PROJECT-milvus" >/dev/null 2>&1 || true
}

topology_healthy() { podman healthcheck run "$PROJECT-$1"; }  # the image's HEALTHCHECK

topology_start_db() {
    log "starting PostgreSQL ($POSTGRES_IMAGE) on 127.0.0.1:$PG_PORT"
    podman run -d --name "$PROJECT-db" --network host \
        -e POSTGRES_USER=faces -e POSTGRES_PASSWORD="$PG_PASSWORD" -e POSTGRES_DB=faces -e PGPORT="$PG_PORT" \
        -v "$PROJECT-pgdata:/var/lib/postgresql/data" "$POSTGRES_IMAGE" >/dev/null
    wait_until 60 "PostgreSQL healthy (pg_isready)" podman_db_healthy \
        || { podman logs --tail 30 "$PROJECT-db"; fail "PostgreSQL did not become healthy"; }
}

topology_wait_milvus() {
    wait_until 300 "Milvus healthy (a pymilvus call on 127.0.0.1:$MILVUS_PORT)" topology_healthy milvus \
        || { podman logs --tail 60 "$PROJECT-milvus"; fail "Milvus did not become healthy"; }
}

topology_start_milvus() {
    log "starting Milvus ($MILVUS_IMAGE) on 127.0.0.1:$MILVUS_PORT"
    # --init: the launcher exits before the server binary on SIGTERM; without an init reaping the
    # orphaned binary, its zombie looks alive to the entrypoint's stop and each stop waits the full grace.
    podman run -d --init --name "$PROJECT-milvus" --network host -e MILVUS_PORT="$MILVUS_PORT" \
        -v "$PROJECT-milvus:/var/lib/milvus" "$MILVUS_IMAGE" >/dev/null
    topology_wait_milvus
}

topology_start_api() { # topology_start_api a|b PORT
    log "starting API replica ${1^^} on 127.0.0.1:$2 (FACES_VECTOR_BACKEND=milvus)"
    podman run -d --name "$PROJECT-api-$1" --network host \
        -e FACES_DATABASE_URL="postgresql+psycopg://faces:$PG_PASSWORD@127.0.0.1:$PG_PORT/faces" \
        -e FACES_PORT="$2" -e FACES_VECTOR_BACKEND=milvus -e FACES_MILVUS_URI="http://127.0.0.1:$MILVUS_PORT" \
        -e FACES_INDEX_RECONCILE_INTERVAL_S="$RECONCILE_S" \
        "$API_IMAGE" faces serve --host 127.0.0.1 >/dev/null
    topology_wait_api "$1"
}

topology_wait_api() {
    wait_until 180 "replica ${1^^} healthy (image HEALTHCHECK: GET /readyz is 200)" topology_healthy "api-$1" \
        || { podman logs --tail 50 "$PROJECT-api-$1"; fail "replica ${1^^} did not become healthy"; }
}

lfw_photo() { printf '%s/images/%s/%s_%04d.jpg' "$LFW_DIR" "$1" "$1" "$2"; }

FACE_ID=
topology_enroll() { # topology_enroll URL PERSON N: sets FACE_ID to the acknowledged face id (HTTP 201)
    local code
    code=$(curl -sS --max-time 120 -o "$WORK/enroll.json" -w '%{http_code}' -F "images=@$(lfw_photo "$2" "$3")" \
        "$1/v1/collections/$COLLECTION/subjects/$2/faces?create_subject=true&face_selection=largest")
    [[ $code == 201 ]] || fail "enrolling $2 #$3 through $1: HTTP $code $(cat "$WORK/enroll.json")"
    FACE_ID=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["results"][0]["face_id"])' "$WORK/enroll.json")
    echo "$FACE_ID $2 $3" >> "$WORK/acknowledged"
}

check_found() { # check_found WHEN URL PERSON N FACE_ID: identify on the enrolled photo returns that face
    local got
    got=$(identify_match "$2" "$(lfw_photo "$3" "$4")")
    grep -q "^$3 $5 " <<< "$got" || fail "$1: identify(${3}_$(printf %04d "$4")) through $2 gave '$got', expected $3 $5"
}

check_unseen() { # check_unseen WHEN URL PERSON N: a photo of PERSON that was not enrolled
    local got
    got=$(identify_match "$2" "$(lfw_photo "$3" "$4")")
    grep -q "^$3 " <<< "$got" || fail "$1: identify(${3}_$(printf %04d "$4"), not enrolled) through $2 gave '$got'"
}

http_code() { curl -s --max-time 120 -o "$WORK/body.json" -w '%{http_code}' "$@" || true; }

store_count() { podman exec "$PROJECT-db" psql -p "$PG_PORT" -U faces -d faces -tAc 'SELECT count(*) FROM faces'; }
milvus_count() { # entities in Milvus's "faces" collection (FACES_MILVUS_COLLECTION), read Strong
    podman exec "$PROJECT-milvus" /opt/milvus/bin/python -c 'import os; from pymilvus import MilvusClient
c = MilvusClient(uri="http://127.0.0.1:" + os.environ["MILVUS_PORT"], timeout=10)
print(c.query("faces", filter="pk >= 0", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])'
}
api_count() { curl -sS --fail-with-body "$1/v1/collections/$COLLECTION" | python3 -c 'import json, sys; print(json.load(sys.stdin)["face_count"])'; }

check_counts() { # check_counts WHEN EXPECTED URL
    local store milvus api
    store=$(store_count) milvus=$(milvus_count) api=$(api_count "$3")
    [[ $store == "$2" && $milvus == "$2" && $api == "$2" ]] \
        || fail "$1: PostgreSQL holds $store faces, Milvus $milvus, the API says $api; expected $2"
    log "$1: PostgreSQL, Milvus and the API agree: $2 faces"
}

milvus_topology_run() {
    topology_start_db
    topology_start_milvus
    topology_start_api a "$API_PORT"
    topology_start_api b "$API_B_PORT"
    curl -sf "$B_URL/readyz"; echo
    curl -sf "$B_URL/readyz" | grep -q '"vector_engine":"milvus"' || fail "replica B does not report vector_engine milvus"

    curl -sS --fail-with-body -H 'content-type: application/json' -d "{\"name\": \"$COLLECTION\"}" \
        "$A_URL/v1/collections" >/dev/null || fail "creating the collection through A failed"
    : > "$WORK/acknowledged"
    local person n slowest=0 t
    log "enrolling ${#TOPOLOGY_PEOPLE[@]} people x $ENROLLED_PER_PERSON photos through A, each identified through B at once"
    for person in "${TOPOLOGY_PEOPLE[@]}"; do
        for ((n = 1; n <= ENROLLED_PER_PERSON; n++)); do
            topology_enroll "$A_URL" "$person" "$n"
            t=$(date +%s%N)
            check_found "read-your-writes" "$B_URL" "$person" "$n" "$FACE_ID"
            t=$((($(date +%s%N) - t) / 1000000))
            if ((t > slowest)); then slowest=$t; fi
        done
    done
    local acked
    acked=$(wc -l < "$WORK/acknowledged")
    log "$acked faces acknowledged by A, each found through B by the next request (slowest identify ${slowest} ms)"
    for person in "${TOPOLOGY_PEOPLE[@]}"; do check_unseen "through B" "$B_URL" "$person" 10; done
    log "through B: an unseen photo of each of the ${#TOPOLOGY_PEOPLE[@]} people matched"
    check_counts "after enrollment" "$acked" "$B_URL"

    log "killing replica A (podman kill: SIGKILL)"
    podman kill "$PROJECT-api-a" >/dev/null
    ! curl -s --max-time 5 "$A_URL/healthz" >/dev/null || fail "replica A still answers after podman kill"
    for person in "${TOPOLOGY_PEOPLE[@]}"; do check_unseen "A killed" "$B_URL" "$person" 11; done
    log "A killed: B still identifies an unseen photo of each person"
    topology_enroll "$B_URL" Ariel_Sharon 1
    check_found "A killed" "$B_URL" Ariel_Sharon 1 "$FACE_ID"
    log "A killed: enrolled Ariel_Sharon through B, found through B"
    acked=$((acked + 1))

    log "stopping Milvus (podman stop: SIGTERM, clean shutdown)"
    podman stop -t 90 "$PROJECT-milvus" >/dev/null
    local code
    code=$(http_code "$B_URL/readyz")
    [[ $code == 503 ]] || fail "Milvus down: B /readyz answered $code, expected 503"
    log "Milvus down: B /readyz 503 $(cat "$WORK/body.json")"
    code=$(http_code -F "image=@$(lfw_photo George_W_Bush 12)" "$B_URL/v1/collections/$COLLECTION/identify")
    [[ $code == 503 ]] || fail "Milvus down: identify through B answered $code, expected 503: $(cat "$WORK/body.json")"
    log "Milvus down: identify through B -> 503 (problem+json)"
    code=$(http_code -F "images=@$(lfw_photo Hugo_Chavez 1)" \
        "$B_URL/v1/collections/$COLLECTION/subjects/Hugo_Chavez/faces?create_subject=true&face_selection=largest")
    [[ $code == 201 ]] || fail "Milvus down: enroll through B answered $code, expected 201 (stored, not yet searchable): $(cat "$WORK/body.json")"
    [[ $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["searchable"])' "$WORK/body.json") == False ]] \
        || fail "Milvus down: the enrollment was not marked searchable=false: $(cat "$WORK/body.json")"
    log "Milvus down: enroll Hugo_Chavez through B -> 201, stored, searchable=false (pushed to Milvus once it is back)"
    local stored_unacked
    stored_unacked=$(($(store_count) - acked))
    log "Milvus down: PostgreSQL holds $stored_unacked face(s) beyond the $acked acknowledged ones"

    log "starting Milvus again on its data volume"
    podman start "$PROJECT-milvus" >/dev/null
    topology_wait_milvus
    wait_until 180 "replica B ready again (Milvus repaired from PostgreSQL; reconcile every ${RECONCILE_S}s)" \
        curl -sf "$B_URL/readyz" || { podman logs --tail 30 "$PROJECT-api-b"; fail "B did not become ready again"; }
    local face
    while read -r face person n; do
        check_found "after the Milvus restart" "$B_URL" "$person" "$n" "$face"
    done < "$WORK/acknowledged"
    log "after the Milvus restart: all $acked acknowledged faces found through B, each by its own photo"
    if ((stored_unacked > 0)); then
        check_unseen "after the Milvus restart" "$B_URL" Hugo_Chavez 2
        log "after the Milvus restart: Hugo_Chavez, stored during the outage, is searchable"
    fi
    check_counts "after the Milvus restart" "$((acked + stored_unacked))" "$B_URL"

    log "starting replica A again"
    podman start "$PROJECT-api-a" >/dev/null
    topology_wait_api a
    check_found "A back" "$A_URL" Ariel_Sharon 1 "$(awk '$2 == "Ariel_Sharon" {print $1}' "$WORK/acknowledged")"
    topology_enroll "$A_URL" Jean_Chretien 1
    check_found "A back" "$B_URL" Jean_Chretien 1 "$FACE_ID"
    log "A back: A finds what B enrolled while A was dead; B finds what A enrolls at once"
    check_counts "at the end" "$((acked + 1 + stored_unacked))" "$A_URL"
}
