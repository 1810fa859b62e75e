"""Unchanged boto3 code against ``faces serve`` (a real uvicorn over real HTTP) on real LFW photos.

The "done when" flow of the Rekognition-compatible API, written the way AWS's examples write it,
on each store and vector engine, compared with ``/v1`` identify on the same collection: the same
people and the same unknowns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from service.testing.server import ServerProcess
from tests.helpers import group_photo, jpeg_bytes, no_face_photo
from tests.milvus_server import require_pymilvus
from tests.postgres import store_url
from tests.rekognition_server import rekognition

pytestmark = pytest.mark.slow

LfwImage = Callable[[str, int], Path]
# People with many LFW photos: photos 1-2 are indexed, 3-4 are probes.
KNOWN = [
    "George_W_Bush",
    "Colin_Powell",
    "Tony_Blair",
    "Donald_Rumsfeld",
    "Gerhard_Schroeder",
    "Ariel_Sharon",
]
# People with one LFW photo each: strangers to the collection.
STRANGERS = ["Aaron_Eckhart", "Abel_Pacheco", "Adam_Sandler", "Adrien_Brody", "Akbar_Hashemi_Rafsanjani"]

LANES = {
    "sqlite-faiss": ("sqlite", "faiss"),
    "postgresql-faiss": ("postgresql", "faiss"),
    "sqlite-milvus": ("sqlite", "milvus"),
}


@pytest.fixture(scope="module", params=list(LANES))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``faces serve`` on each store and vector engine, auth off (any signature is accepted)."""
    store, engine = LANES[request.param]
    tmp = tmp_path_factory.mktemp(f"rekognition-{request.param}")
    env = {"FACES_DATABASE_URL": store_url(store, request, tmp)}
    if engine == "milvus":
        require_pymilvus()
        env |= {"FACES_VECTOR_BACKEND": "milvus", "FACES_MILVUS_URI": str(tmp / "milvus.db")}
    srv = ServerProcess(tmp, env=env)
    srv.start()
    yield srv
    srv.stop()


def read(lfw_image: LfwImage, person: str, n: int) -> bytes:
    return lfw_image(person, n).read_bytes()


def v1_identify(url: str, collection: str, image: bytes) -> str | None:
    response = httpx.post(
        f"{url}/v1/collections/{collection}/identify",
        files={"image": ("probe.jpg", image, "image/jpeg")},
        params={"max_faces": 1},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    match = response.json()["faces"][0]["match"]
    return None if match is None else str(match["subject_id"])


def v1_verify(url: str, a: bytes, b: bytes) -> bool:
    response = httpx.post(
        f"{url}/v1/verify",
        files={"image_a": ("a.jpg", a, "image/jpeg"), "image_b": ("b.jpg", b, "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return bool(response.json()["match"])


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


def test_done_when_flow_matches_v1_identify(server: ServerProcess, lfw_image: LfwImage) -> None:
    client = rekognition(server.url)
    collection = "office"
    client.create_collection(CollectionId=collection)

    # Index people with ExternalImageId (free-standing faces), then group them into users.
    faces_of: dict[str, list[str]] = {}
    for person in KNOWN:
        for n in (1, 2):
            response = client.index_faces(
                CollectionId=collection,
                Image={"Bytes": read(lfw_image, person, n)},
                ExternalImageId=f"{person}_{n}",
                MaxFaces=1,
                QualityFilter="AUTO",
                DetectionAttributes=["DEFAULT"],
            )
            (record,) = response["FaceRecords"]
            assert record["Face"]["ExternalImageId"] == f"{person}_{n}"
            box = record["Face"]["BoundingBox"]
            assert 0.0 <= box["Left"] < 1.0
            assert 0.0 < box["Width"] <= 1.0
            assert 0.0 < record["FaceDetail"]["Confidence"] <= 100.0
            faces_of.setdefault(person, []).append(record["Face"]["FaceId"])
    # Free-standing faces: searchable and listed, but nobody's yet.
    loose = client.search_faces_by_image(
        CollectionId=collection, Image={"Bytes": read(lfw_image, KNOWN[0], 3)}, MaxFaces=2
    )
    assert loose["FaceMatches"], "a known person's other photo finds their indexed faces"
    assert {m["Face"]["FaceId"] for m in loose["FaceMatches"]} <= set(faces_of[KNOWN[0]])
    assert all("UserId" not in m["Face"] for m in loose["FaceMatches"])
    assert v1_identify(server.url, collection, read(lfw_image, KNOWN[0], 3)) is None

    for person, face_ids in faces_of.items():
        client.create_user(CollectionId=collection, UserId=person)
        associated = client.associate_faces(CollectionId=collection, UserId=person, FaceIds=face_ids)
        assert sorted(f["FaceId"] for f in associated["AssociatedFaces"]) == sorted(face_ids)
        assert associated["UnsuccessfulFaceAssociations"] == []

    # Paginators walk everything exactly once.
    listed = [
        face
        for page in client.get_paginator("list_faces").paginate(
            CollectionId=collection, PaginationConfig={"PageSize": 5}
        )
        for face in page["Faces"]
    ]
    all_ids = [f for ids in faces_of.values() for f in ids]
    assert sorted(f["FaceId"] for f in listed) == sorted(all_ids)
    assert {f["FaceId"]: f["UserId"] for f in listed} == {f: p for p, ids in faces_of.items() for f in ids}
    users = [
        u["UserId"]
        for page in client.get_paginator("list_users").paginate(
            CollectionId=collection, PaginationConfig={"PageSize": 4}
        )
        for u in page["Users"]
    ]
    assert users == sorted(KNOWN)

    # Search by image: the same people and the same unknowns as /v1 identify.
    probes = [(p, read(lfw_image, p, n)) for p in KNOWN for n in (3, 4)]
    probes += [(None, read(lfw_image, s, 1)) for s in STRANGERS]
    found_known = 0
    for truth, image in probes:
        users_answer = client.search_users_by_image(CollectionId=collection, Image={"Bytes": image})
        best = users_answer["UserMatches"][0]["User"]["UserId"] if users_answer["UserMatches"] else None
        assert best == v1_identify(server.url, collection, image)
        faces_answer = client.search_faces_by_image(CollectionId=collection, Image={"Bytes": image})
        nearest = (
            faces_answer["FaceMatches"][0]["Face"].get("UserId") if faces_answer["FaceMatches"] else None
        )
        assert nearest == best
        similarities = [m["Similarity"] for m in faces_answer["FaceMatches"]]
        assert similarities == sorted(similarities, reverse=True)
        assert all(80.0 <= s <= 100.0 for s in similarities)
        found_known += int(truth is not None and best == truth)
    assert found_known >= len(KNOWN)  # at least half the known probes named (the model's accuracy)

    # SearchFaces: the face searched with never comes back; the person's other photo does.
    first, second = faces_of[KNOWN[1]]
    by_face = client.search_faces(CollectionId=collection, FaceId=first, MaxFaces=5, FaceMatchThreshold=0)
    ids = [m["Face"]["FaceId"] for m in by_face["FaceMatches"]]
    assert first not in ids
    assert ids[0] == second
    assert by_face["SearchedFaceId"] == first
    by_user = client.search_users(CollectionId=collection, UserId=KNOWN[1], UserMatchThreshold=0)
    assert KNOWN[1] not in [m["User"]["UserId"] for m in by_user["UserMatches"]]

    # Compare: CompareFaces' default 80 is /v1/verify's decision (on the target's largest face).
    def area(face: dict[str, Any]) -> float:
        return float(face["BoundingBox"]["Width"] * face["BoundingBox"]["Height"])

    pairs = [(KNOWN[2], 1, KNOWN[2], 3), (KNOWN[2], 1, KNOWN[3], 1), (KNOWN[4], 2, KNOWN[4], 4)]
    decisions = []
    for a_person, a_n, b_person, b_n in pairs:
        a, b = read(lfw_image, a_person, a_n), read(lfw_image, b_person, b_n)
        compared = client.compare_faces(SourceImage={"Bytes": a}, TargetImage={"Bytes": b})
        matched = [m["Face"] for m in compared["FaceMatches"]]
        largest = max([*matched, *compared["UnmatchedFaces"]], key=area)
        decisions.append(largest in matched)
        assert decisions[-1] == v1_verify(server.url, a, b)
    assert decisions[1] is False  # two different people

    # Detect: every face of a group photo, boxes as ratios, left to right.
    group = group_photo([lfw_image(p, 1) for p in KNOWN[:3]])
    details = client.detect_faces(Image={"Bytes": group}, Attributes=["DEFAULT"])["FaceDetails"]
    assert len(details) == 3
    lefts = sorted(d["BoundingBox"]["Left"] for d in details)
    assert lefts[0] < 1 / 3 < lefts[1] < 2 / 3 < lefts[2] < 1.0
    assert {lm["Type"] for lm in details[0]["Landmarks"]} == {
        "eyeLeft",
        "eyeRight",
        "nose",
        "mouthLeft",
        "mouthRight",
    }

    # One truth: /v1 sees the collection, the users (as subjects) and every face.
    described = client.describe_collection(CollectionId=collection)
    v1 = httpx.get(f"{server.url}/v1/collections/{collection}").json()
    assert described["FaceCount"] == v1["face_count"] == len(all_ids)
    assert described["UserCount"] == v1["subject_count"] == len(KNOWN)

    # Disassociate, delete a user (its faces stay), delete faces, delete the collection.
    person = KNOWN[5]
    out = client.disassociate_faces(CollectionId=collection, UserId=person, FaceIds=faces_of[person][:1])
    assert [f["FaceId"] for f in out["DisassociatedFaces"]] == faces_of[person][:1]
    client.delete_user(CollectionId=collection, UserId=person)
    assert client.describe_collection(CollectionId=collection)["FaceCount"] == len(all_ids)
    deleted = client.delete_faces(CollectionId=collection, FaceIds=[*faces_of[person], faces_of[KNOWN[0]][0]])
    assert sorted(deleted["DeletedFaces"]) == sorted(faces_of[person])
    (refused,) = deleted["UnsuccessfulFaceDeletions"]
    assert refused["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]
    assert refused["UserId"] == KNOWN[0]
    assert client.describe_collection(CollectionId=collection)["FaceCount"] == len(all_ids) - 2
    gone = client.search_faces_by_image(CollectionId=collection, Image={"Bytes": read(lfw_image, person, 1)})
    assert all(m["Face"]["FaceId"] not in faces_of[person] for m in gone["FaceMatches"])
    client.delete_collection(CollectionId=collection)
    assert (
        error_code(lambda: client.describe_collection(CollectionId=collection)) == "ResourceNotFoundException"
    )


def _only_sqlite_faiss(server: ServerProcess) -> None:
    if "sqlite-faiss" not in str(server.data_dir):
        pytest.skip("transport details are the same on every lane")


def test_one_truth_with_v1_and_collection_paginator(server: ServerProcess, lfw_image: LfwImage) -> None:
    _only_sqlite_faiss(server)
    client = rekognition(server.url)
    names = [f"both-{i}" for i in range(5)]
    for name in names[:3]:
        client.create_collection(CollectionId=name)
    for name in names[3:]:
        assert httpx.post(f"{server.url}/v1/collections", json={"name": name}).status_code == 201
    v1_names = {c["name"] for c in httpx.get(f"{server.url}/v1/collections").json()["collections"]}
    walked = [
        c
        for page in client.get_paginator("list_collections").paginate(PaginationConfig={"PageSize": 2})
        for c in page["CollectionIds"]
    ]
    assert len(walked) == len(set(walked))
    assert set(names) <= set(walked) == v1_names
    # A /v1 enrollment is a user with faces on the Rekognition side.
    person = KNOWN[0]
    enrolled = httpx.post(
        f"{server.url}/v1/collections/{names[3]}/subjects/{person}/faces",
        params={"create_subject": "true"},
        files=[("images", ("a.jpg", read(lfw_image, person, 1), "image/jpeg"))],
        timeout=60,
    )
    assert enrolled.status_code == 201, enrolled.text
    (face,) = client.list_faces(CollectionId=names[3], UserId=person)["Faces"]
    assert face["UserId"] == person
    # A free-standing face shows on /v1 with subject_id null.
    indexed = client.index_faces(CollectionId=names[0], Image={"Bytes": read(lfw_image, person, 2)})
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    v1_face = httpx.get(f"{server.url}/v1/collections/{names[0]}/faces/{face_id}").json()
    assert v1_face["subject_id"] is None
    for name in names:
        client.delete_collection(CollectionId=name)


def raw_call(server: ServerProcess, operation: str, body: bytes | str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/",
        content=body,
        headers={
            "X-Amz-Target": f"RekognitionService.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
            **headers,
        },
        timeout=60,
    )


def assert_aws_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["x-amzn-errortype"] == code
    body = response.json()
    assert body["__type"] == code
    return str(body["message"])


def test_each_error_class(server: ServerProcess, lfw_image: LfwImage) -> None:
    _only_sqlite_faiss(server)
    client = rekognition(server.url)
    client.create_collection(CollectionId="errors")
    photo = read(lfw_image, KNOWN[0], 1)
    assert (
        error_code(lambda: client.create_collection(CollectionId="errors"))
        == "ResourceAlreadyExistsException"
    )
    assert error_code(lambda: client.list_faces(CollectionId="missing")) == "ResourceNotFoundException"
    not_image = b"this is not an image at all"
    assert (
        error_code(lambda: client.detect_faces(Image={"Bytes": not_image})) == "InvalidImageFormatException"
    )
    assert (
        error_code(
            lambda: client.index_faces(CollectionId="errors", Image={"Bytes": b"\xff\xd8\xff" + b"0" * 100})
        )
        == "InvalidImageFormatException"
    )
    too_large = jpeg_bytes(Image.new("RGB", (16, 16))) + b"\0" * (5 * 1024 * 1024)
    assert error_code(lambda: client.detect_faces(Image={"Bytes": too_large})) == "ImageTooLargeException"
    s3 = {"S3Object": {"Bucket": "my-bucket", "Name": "n.jpg"}}
    with pytest.raises(ClientError) as caught:
        client.search_faces_by_image(CollectionId="errors", Image=s3)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "Bytes" in caught.value.response["Error"]["Message"]
    assert (
        error_code(
            lambda: client.search_faces_by_image(CollectionId="errors", Image={"Bytes": no_face_photo()})
        )
        == "InvalidParameterException"
    )
    assert (
        error_code(
            lambda: client.compare_faces(SourceImage={"Bytes": no_face_photo()}, TargetImage={"Bytes": photo})
        )
        == "InvalidParameterException"
    )
    assert error_code(lambda: client.list_faces(CollectionId="errors", NextToken="bm9wZQ==")) == (
        "InvalidPaginationTokenException"
    )
    client.create_user(CollectionId="errors", UserId="u1")
    assert error_code(lambda: client.create_user(CollectionId="errors", UserId="u1")) == "ConflictException"
    assert (
        error_code(lambda: client.delete_user(CollectionId="errors", UserId="nobody"))
        == "ResourceNotFoundException"
    )
    with pytest.raises(ClientError) as caught:
        client.describe_projects()
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "DescribeProjects" in caught.value.response["Error"]["Message"]

    # What boto3 would refuse before sending, sent raw: the server checks the model's shapes too.
    assert_aws_error(
        raw_call(server, "CreateCollection", '{"CollectionId": "bad name!"}'),
        400,
        "InvalidParameterException",
    )
    assert_aws_error(raw_call(server, "CreateCollection", "{}"), 400, "InvalidParameterException")
    assert_aws_error(
        raw_call(server, "ListFaces", '{"CollectionId": "errors", "MaxResults": 5000}'),
        400,
        "InvalidParameterException",
    )
    assert_aws_error(
        raw_call(server, "DetectFaces", '{"Image": {"Bytes": "***"}}'), 400, "InvalidParameterException"
    )
    assert_aws_error(raw_call(server, "ListCollections", "{not json"), 400, "SerializationException")
    message = assert_aws_error(raw_call(server, "MakeCoffee", "{}"), 400, "UnknownOperationException")
    assert "MakeCoffee" in message
    assert_aws_error(
        httpx.get(f"{server.url}/", headers={"X-Amz-Target": "RekognitionService.ListCollections"}),
        400,
        "UnknownOperationException",
    )
    huge = b'{"Image": {"Bytes": "' + b"A" * (15 * 1024 * 1024) + b'"}}'
    assert_aws_error(raw_call(server, "DetectFaces", huge), 400, "ImageTooLargeException")
    # /v1 is untouched by the gateway: its own problem+json 404s.
    assert (
        httpx.get(f"{server.url}/v1/nowhere").headers["content-type"].startswith("application/problem+json")
    )
    client.delete_collection(CollectionId="errors")


def test_index_faces_max_faces_and_quality_filter(server: ServerProcess, lfw_image: LfwImage) -> None:
    _only_sqlite_faiss(server)
    client = rekognition(server.url)
    client.create_collection(CollectionId="group")
    group = group_photo([lfw_image(p, 1) for p in KNOWN[:3]])
    out = client.index_faces(CollectionId="group", Image={"Bytes": group}, ExternalImageId="team", MaxFaces=2)
    assert len(out["FaceRecords"]) == 2
    (extra,) = out["UnindexedFaces"]
    assert extra["Reasons"] == ["EXCEEDS_MAX_FACES"]
    kept = [r["FaceDetail"]["BoundingBox"] for r in out["FaceRecords"]]
    smallest_kept = min(b["Width"] * b["Height"] for b in kept)
    dropped = extra["FaceDetail"]["BoundingBox"]
    assert dropped["Width"] * dropped["Height"] <= smallest_kept
    assert len({r["Face"]["ImageId"] for r in out["FaceRecords"]}) == 1
    # A small face: indexed with NONE, refused as SMALL_BOUNDING_BOX by the gate at HIGH.
    with Image.open(lfw_image(KNOWN[1], 1)) as img:
        small = jpeg_bytes(img.convert("RGB").resize((110, 110)))
    high = client.index_faces(CollectionId="group", Image={"Bytes": small}, QualityFilter="HIGH")
    assert high["FaceRecords"] == []
    assert "SMALL_BOUNDING_BOX" in high["UnindexedFaces"][0]["Reasons"]
    none = client.index_faces(CollectionId="group", Image={"Bytes": small}, QualityFilter="NONE")
    assert len(none["FaceRecords"]) == 1
    client.delete_collection(CollectionId="group")


def test_users_association_rules(server: ServerProcess, lfw_image: LfwImage) -> None:
    _only_sqlite_faiss(server)
    client = rekognition(server.url)
    client.create_collection(CollectionId="users")

    def index(person: str, n: int) -> str:
        out = client.index_faces(
            CollectionId="users", Image={"Bytes": read(lfw_image, person, n)}, MaxFaces=1
        )
        return str(out["FaceRecords"][0]["Face"]["FaceId"])

    bush_1, bush_2, serena = index("George_W_Bush", 1), index("George_W_Bush", 2), index("Serena_Williams", 1)
    for user in ("bush", "other"):
        client.create_user(CollectionId="users", UserId=user)
    first = client.associate_faces(CollectionId="users", UserId="bush", FaceIds=[bush_1])
    assert [f["FaceId"] for f in first["AssociatedFaces"]] == [bush_1]  # a user without faces takes any
    missing = "00000000-0000-4000-8000-000000000000"
    out = client.associate_faces(CollectionId="users", UserId="bush", FaceIds=[bush_2, serena, missing])
    assert [f["FaceId"] for f in out["AssociatedFaces"]] == [bush_2]  # the same person: above 75
    reasons = {f["FaceId"]: f for f in out["UnsuccessfulFaceAssociations"]}
    assert reasons[serena]["Reasons"] == ["LOW_MATCH_CONFIDENCE"]
    assert reasons[serena]["Confidence"] < 75.0
    assert reasons[missing]["Reasons"] == ["FACE_NOT_FOUND"]
    taken = client.associate_faces(CollectionId="users", UserId="other", FaceIds=[bush_1])
    assert taken["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["ASSOCIATED_TO_A_DIFFERENT_USER"]
    assert taken["UnsuccessfulFaceAssociations"][0]["UserId"] == "bush"
    wrong = client.disassociate_faces(CollectionId="users", UserId="other", FaceIds=[bush_1])
    assert wrong["DisassociatedFaces"] == []
    assert wrong["UnsuccessfulFaceDisassociations"][0]["Reasons"] == ["ASSOCIATED_TO_A_DIFFERENT_USER"]
    # SearchUsers by face: the user the face belongs to is found; by user: never itself.
    by_face = client.search_users(CollectionId="users", FaceId=bush_2)
    assert by_face["UserMatches"][0]["User"]["UserId"] == "bush"
    assert by_face["SearchedFace"] == {"FaceId": bush_2}
    assert client.search_users(CollectionId="users", UserId="bush")["UserMatches"] == []
    assert (
        error_code(lambda: client.associate_faces(CollectionId="users", UserId="ghost", FaceIds=[serena]))
        == "ResourceNotFoundException"
    )
    client.delete_collection(CollectionId="users")
