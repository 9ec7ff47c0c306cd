"""Objects the kind run creates besides the chart's: the data volume, the Job that seeds it, and the Job that indexes
the catalogue for a second model version.

The seed Job writes, with the image's own CLI, the sample catalogue (which the chart's indexing Job then indexes for
the stable model) and a model package of version 2 (the canary's `storageUri`, pvc://image-search-data/models/2).
The chart's indexing Job downloads a package with KServe's storage initializer, which cannot read a PVC, so the
version 2 collection is built by `index_job` with the package mounted instead.

    python -m tests.kind.manifests claim | kubectl apply -n image-search -f -
    python -m tests.kind.manifests seed --image image-search:0.1.0 | kubectl apply -n image-search -f -
    python -m tests.kind.manifests index --image image-search:0.1.0 --model-version 2 | kubectl apply ...
"""

from __future__ import annotations

import argparse
import sys

import yaml

CLAIM = "image-search-data"
CATALOGUE_DIR = "catalogue/photos"
MODELS_DIR = "models"
MOUNT = "/data"
LABELS = {"app.kubernetes.io/part-of": "image-search", "app.kubernetes.io/component": "kind-e2e"}
# The package of the canary is the bundled weights under a new version: a new collection, the same behaviour.
_SET_VERSION = (
    "import json, sys; path = sys.argv[1] + '/model.json'; manifest = json.load(open(path)); "
    "manifest['version'] = sys.argv[2]; json.dump(manifest, open(path, 'w'), indent=2)"
)


def data_claim(size: str = "2Gi") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "labels": LABELS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def _restricted_container(name: str, image: str, command: list[str], read_only_data: bool) -> dict:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [
            {"name": "HOME", "value": "/cache"},
            {"name": "XDG_CACHE_HOME", "value": "/cache/xdg"},
            {"name": "TORCH_HOME", "value": "/cache/torch"},
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": MOUNT, "readOnly": read_only_data},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": "/cache"},
        ],
    }


def _job(name: str, container: dict, backoff_limit: int = 2) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {
            "backoffLimit": backoff_limit,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "cache", "emptyDir": {"sizeLimit": "2Gi"}},
                    ],
                },
            },
        },
    }


def model_dir(version: str) -> str:
    return f"{MOUNT}/{MODELS_DIR}/{version}"


def storage_uri(version: str) -> str:
    """The package of `version` as a KServe storageUri."""
    return f"pvc://{CLAIM}/{MODELS_DIR}/{version}"


def seed_job(image: str, canary_version: str = "2") -> dict:
    """Writes the sample catalogue and the canary's model package onto the data volume; re-running changes nothing."""
    package = model_dir(canary_version)
    script = " && ".join(
        [
            f"image-search sample-catalogue --out {MOUNT}/{CATALOGUE_DIR}",
            f"image-search export-model --out {package}",
            f'python -c "{_SET_VERSION}" {package} {canary_version}',
        ]
    )
    return _job("image-search-seed", _restricted_container("seed", image, ["sh", "-c", script], read_only_data=False))


def index_job(image: str, model_version: str, milvus_uri: str, collection: str = "images") -> dict:
    """Indexes the catalogue for the package of `model_version`, into that model's own collection."""
    command = [
        "image-search",
        "index",
        f"{MOUNT}/{CATALOGUE_DIR}",
        f"--model-dir={model_dir(model_version)}",
        f"--milvus-uri={milvus_uri}",
        f"--collection={collection}",
    ]
    return _job(f"image-search-index-v{model_version}", _restricted_container("indexer", image, command, True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kind.manifests", description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    kinds.add_parser("claim", help="The data volume.")
    seed = kinds.add_parser("seed", help="The Job writing the catalogue and the canary's package.")
    seed.add_argument("--image", required=True, help="The predictor image.")
    seed.add_argument("--canary-version", default="2", help="Version of the package written (default 2).")
    index = kinds.add_parser("index", help="The Job indexing the catalogue for a package on the volume.")
    index.add_argument("--image", required=True, help="The predictor image.")
    index.add_argument("--model-version", default="2", help="Version of the package to index for (default 2).")
    index.add_argument("--milvus-uri", default="http://milvus:19530", help="Milvus (default http://milvus:19530).")
    args = parser.parse_args(argv)
    if args.kind == "claim":
        manifest = data_claim()
    elif args.kind == "seed":
        manifest = seed_job(args.image, args.canary_version)
    else:
        manifest = index_job(args.image, args.model_version, args.milvus_uri)
    yaml.safe_dump(manifest, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
