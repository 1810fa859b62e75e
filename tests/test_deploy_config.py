"""The deployment files agree with the code: settings documented, compose wiring, image variants.

deploy/smoke.sh boots the real thing (podman, minutes); these checks are static and fast.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"
CLIENT_VARIABLES = {"FACES_BASE_URL", "FACES_API_KEY"}  # read by `faces enroll`, not by the server
ASSIGNMENT = re.compile(r"^#?\s*(FACES_[A-Z0-9_]+)=(\S*)")


def _documented() -> dict[str, str]:
    """Every FACES_* variable in .env.example (set or commented out) with its example value."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / name).read_text())
    return loaded


def test_env_example_documents_exactly_the_settings_fields() -> None:
    settings_variables = {f"FACES_{name.upper()}" for name in Settings.model_fields}
    documented = set(_documented())
    assert settings_variables - documented == set(), "settings missing from deploy/.env.example"
    assert documented - settings_variables - CLIENT_VARIABLES == set(), "unknown variables documented"


@pytest.mark.parametrize(
    "variable",
    [name for name, value in sorted(_documented().items()) if name not in CLIENT_VARIABLES and value],
)
def test_documented_example_values_are_accepted_by_settings(
    variable: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv(variable, _documented()[variable])
    Settings()


def test_compose_runs_the_cpu_image_on_postgres_after_it_is_healthy() -> None:
    compose = _compose("docker-compose.yml")
    api, db = compose["services"]["api"], compose["services"]["db"]

    assert (REPO_ROOT / api["build"]["context"] / api["build"]["dockerfile"]).is_file()
    assert api["build"]["target"] == "cpu"
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert "readyz" in " ".join(api["healthcheck"]["test"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert api["environment"]["FACES_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert api["env_file"] == "${API_ENV_FILE:-.env}"  # .env unless a test points it elsewhere
    mounts = {v.split(":")[0]: v.split(":")[1] for v in api["volumes"] + db["volumes"]}
    assert mounts["index"] == api["environment"]["FACES_INDEX_DIR"]
    assert mounts["pgdata"] == "/var/lib/postgresql/data"
    assert set(compose["volumes"]) == {"index", "pgdata"}


def test_gpu_override_builds_the_gpu_target_and_reserves_nvidia_devices() -> None:
    api = _compose("deploy/docker-compose.gpu.yml")["services"]["api"]

    assert api["build"]["target"] == "gpu"
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]


def test_dockerfile_has_both_targets_a_non_root_user_and_a_readiness_healthcheck() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.MULTILINE)

    assert {"cpu", "gpu"} <= set(stages)
    assert stages[-1] == "cpu", "a build without --target must give the CPU image"
    healthchecks = re.findall(r"^HEALTHCHECK .*\\\n.*$", dockerfile, flags=re.MULTILINE)
    assert len(healthchecks) == 2
    assert all("/readyz" in check and "urllib" in check for check in healthchecks)
    assert re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE) == ["faces", "faces"]
    for artifact in ("*.onnx", "*.json"):
        assert f"models/artifacts/{artifact}" in dockerfile
    assert list((REPO_ROOT / "models" / "artifacts").glob("*.onnx")), "the image bakes these in"


def _image_requirements_module() -> ModuleType:
    # deploy/ is not a package (the Dockerfile runs the script on its own); load it from its path.
    path = REPO_ROOT / "deploy" / "image_requirements.py"
    spec = importlib.util.spec_from_file_location("image_requirements", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_image_swaps_the_cpu_wheels_for_the_gpu_extra() -> None:
    script = _image_requirements_module()
    pyproject = REPO_ROOT / "pyproject.toml"
    gpu_requirements = script.image_requirements(pyproject, "gpu")
    cpu = {script.requirement_name(r) for r in script.image_requirements(pyproject, "cpu")}
    gpu = {script.requirement_name(r) for r in gpu_requirements}

    assert {"onnxruntime", "faiss-cpu", "psycopg"} <= cpu
    assert not {"onnxruntime-gpu", "faiss-gpu-cu12"} & cpu
    assert {"onnxruntime-gpu", "faiss-gpu-cu12", "psycopg"} <= gpu
    assert not {"onnxruntime", "faiss-cpu"} & gpu
    assert cpu - {"onnxruntime", "faiss-cpu"} == gpu - {"onnxruntime-gpu", "faiss-gpu-cu12"}
    # onnxruntime-gpu >= 1.27 is built for CUDA 13; the image and faiss-gpu-cu12 are CUDA 12.
    assert "onnxruntime-gpu<1.27" in gpu_requirements


class _ComposeLoader(yaml.SafeLoader):
    """Compose's own tags (``!reset``, ``!override``) read as plain values."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: loader.construct_sequence(node),  # type: ignore[arg-type]
)


def test_milvus_override_runs_replicas_behind_a_proxy_on_the_official_standalone_set() -> None:
    compose: dict[str, Any] = yaml.load(
        (REPO_ROOT / "deploy" / "docker-compose.milvus.yml").read_text(), Loader=_ComposeLoader
    )
    services = compose["services"]
    assert {"etcd", "minio", "milvus", "api", "proxy"} <= set(services)
    assert services["milvus"]["image"].endswith("milvusdb/milvus:v2.3.5}")
    assert services["milvus"]["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert "ports" not in services["milvus"]  # only the replicas reach Milvus
    api = services["api"]
    assert api["environment"]["FACES_VECTOR_BACKEND"] == "milvus"
    assert api["environment"]["FACES_MILVUS_URI"].endswith("http://milvus:19530}")
    assert api["ports"] is None  # !reset: the proxy publishes the port, replicas do not collide
    assert api["deploy"]["replicas"] == "${API_REPLICAS:-2}"
    assert api["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert services["proxy"]["ports"] == ["${API_BIND:-127.0.0.1:8000}:8000"]
    nginx = (REPO_ROOT / "deploy" / "nginx-api.conf").read_text()
    assert "server api:8000 resolve;" in nginx
    gpu = _compose("deploy/docker-compose.milvus-gpu.yml")["services"]["milvus"]
    assert gpu["image"].endswith("-gpu}")
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
