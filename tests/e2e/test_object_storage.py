"""Catalogues in a real S3 server (SeaweedFS): indexed, searched and shown, sharded, resumed, synced, and refused.

Credentials and the endpoint reach every command through the standard AWS environment, as they would in a pod. The
server's `lister` key may list but never read: a run made with it proves that it skipped objects without reading them.
"""

import base64
import hashlib
import io
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.gcs_server import run_gcs_server
from harness.polling import wait_for
from harness.predictor_server import CLI, REPO_ROOT, run_cli, run_predictor
from harness.s3_server import ACCESS_KEY, run_s3_server
from predictor.embedding.model_package import default_spec
from predictor.index.collection import versioned_collection
from predictor.index.ingestion import in_shard
from tests.e2e.conftest import near_duplicate

SUMMARY = re.compile(r"^added (\d+), skipped (\d+), failed (\d+) \(.* now holds (\d+) images\)$")
SYNC_SUMMARY = re.compile(r"^added (\d+), updated (\d+), deleted (\d+), unchanged (\d+) \(.* now holds (\d+) images\)$")
SHARDS = 3
# No instance metadata or profile files: only what a test puts in the environment counts as a credential.
NO_AMBIENT_CREDENTIALS = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


def store_env(s3, key: str = ACCESS_KEY) -> dict[str, str]:
    return {**NO_AMBIENT_CREDENTIALS, **s3.env(key, key + "-secret")}


def summary(result: subprocess.CompletedProcess, pattern: re.Pattern = SUMMARY) -> tuple[int, ...]:
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    match = pattern.match(last)
    assert match, f"unexpected last line: {last!r}"
    return tuple(int(number) for number in match.groups())


def fresh_bucket(s3) -> str:
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    return bucket


def upload(s3, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3.client()
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def variants(catalogue, count: int) -> list[bytes]:
    """`count` distinct real JPEGs: the sample photos and their quadrants."""
    found = []
    for path in sorted(catalogue.photos.values()):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        height, width = pixels.shape[0] // 2, pixels.shape[1] // 2
        for part in [pixels] + [pixels[y : y + height, x : x + width] for y in (0, height) for x in (0, width)]:
            out = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(part)).save(out, format="JPEG", quality=90)
            found.append(out.getvalue())
            if len(found) == count:
                return found
    raise AssertionError(f"the catalogue gives only {len(found)} variants")


def rows(milvus_uri: str, alias: str, field: str = "uri") -> dict:
    """id -> uri (or another field) of every row of the default model's collection behind `alias`."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri)
    try:
        collection = versioned_collection(alias, default_spec().identity)
        client.load_collection(collection)
        found = client.query(collection, filter='id != ""', output_fields=["id", field], limit=16384)
        return {row["id"]: row[field] for row in found}
    finally:
        client.close()
        if "://" not in milvus_uri:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(milvus_uri)


def index_command(*sources: str, milvus_uri: str, alias: str, more: tuple[str, ...] = ()) -> list[str]:
    return [*CLI, "index", *sources, "--milvus-uri", milvus_uri, "--collection", alias, *more]


def own_uri(milvus_uri: str, tmp_path: Path) -> str:
    """A milvus-lite file of this test's own: the session's file is held open by the session's server."""
    return milvus_uri if "://" in milvus_uri else str(tmp_path / "milvus.db")


def test_a_bucket_is_indexed_searched_shown_and_resumed_from_its_listing(
    s3_server, catalogue, milvus_uri_each, tmp_path
):
    milvus_uri = own_uri(milvus_uri_each, tmp_path)
    bucket, alias = fresh_bucket(s3_server), f"s3_{uuid.uuid4().hex[:8]}"
    upload(s3_server, bucket, {f"shop/{path.name}": path.read_bytes() for path in catalogue.photos.values()})
    upload(s3_server, bucket, {"odd/notes.txt": b"not a photo", "odd/broken.jpg": b"text named like a photo"})
    env = store_env(s3_server)

    first = run_cli(
        "index",
        f"s3://{bucket}/shop",
        f"s3://{bucket}/odd/",
        "--milvus-uri",
        milvus_uri,
        "--collection",
        alias,
        env=env,
    )
    photos = len(catalogue.photos)
    assert summary(first) == (photos, 0, 1, photos)
    assert f"skipped s3://{bucket}/odd/notes.txt: not an image" in first.stderr
    assert f"skipped s3://{bucket}/odd/broken.jpg: not a supported image" in first.stderr
    stored = rows(milvus_uri, alias)
    assert sorted(stored.values()) == sorted(f"s3://{bucket}/shop/{path.name}" for path in catalogue.photos.values())

    # The `lister` key cannot read a single object: this re-run skips everything from the listing alone.
    again = run_cli(
        "index",
        f"s3://{bucket}/shop/",
        "--milvus-uri",
        milvus_uri,
        "--collection",
        alias,
        env=store_env(s3_server, "lister"),
    )
    assert summary(again) == (0, photos, 0, photos)

    chelsea = catalogue.photos["chelsea"]
    with run_predictor(milvus_uri, tmp_path, "--collection", alias, "--ui", env=env) as server:
        query = {"instances": [{"image": {"b64": base64.b64encode(near_duplicate(chelsea.read_bytes())).decode()}}]}
        response = httpx.post(f"{server.http_url}/v1/models/image-search:predict", json=query, timeout=60)
        assert response.status_code == 200, response.text
        top = response.json()["predictions"][0][0]
        assert top["uri"] == f"s3://{bucket}/shop/chelsea.jpg"
        assert top["metadata"]["filename"] == "chelsea.jpg" and top["metadata"]["object_version"]

        thumbnail = httpx.get(f"{server.http_url}/ui/thumbnail", params={"id": top["id"]}, timeout=30)
        assert thumbnail.status_code == 200, thumbnail.text
        assert thumbnail.headers["content-type"] == "image/jpeg"
        shown = Image.open(io.BytesIO(thumbnail.content))
        assert shown.format == "JPEG" and max(shown.size) <= 256
        again = httpx.get(
            f"{server.http_url}/ui/thumbnail",
            params={"id": top["id"]},
            headers={"If-None-Match": thumbnail.headers["etag"]},
            timeout=30,
        )
        assert again.status_code == 304
        unknown = httpx.get(f"{server.http_url}/ui/thumbnail", params={"id": "0" * 64}, timeout=30)
        assert unknown.status_code == 404


def test_shards_split_a_bucket_and_a_killed_shard_resumes(s3_server, catalogue, milvus_server_uri):
    bucket, alias = fresh_bucket(s3_server), f"shards_{uuid.uuid4().hex[:8]}"
    objects = {f"many/{number:03d}.jpg": body for number, body in enumerate(variants(catalogue, 60))}
    upload(s3_server, bucket, objects)
    uris = [f"s3://{bucket}/{key}" for key in objects]
    expected = {shard: sum(in_shard(uri, shard, SHARDS) for uri in uris) for shard in range(SHARDS)}
    victim = 0
    assert expected[victim] >= 10, "the killed shard needs enough work to be caught mid-run"

    def shard(number: int, batch_size: int) -> list[str]:
        more = ("--shard-index", str(number), "--shard-count", str(SHARDS), "--batch-size", str(batch_size))
        return index_command(f"s3://{bucket}/many", milvus_uri=milvus_server_uri, alias=alias, more=more)

    env = {**os.environ, **store_env(s3_server)}
    processes = {
        number: subprocess.Popen(
            shard(number, 1 if number == victim else 8),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(SHARDS)
    }
    victim_uris = {uri for uri in uris if in_shard(uri, victim, SHARDS)}

    def victim_is_midway() -> bool:
        try:
            written = victim_uris & set(rows(milvus_server_uri, alias).values())
        except Exception:  # noqa: BLE001 - the collection is not there, or not loaded, yet
            return False
        return 0 < len(written) < len(victim_uris)

    wait_for(victim_is_midway, timeout_s=300, what="the victim shard writing its first rows", interval_s=0.2)
    processes[victim].send_signal(signal.SIGKILL)
    processes[victim].communicate(timeout=30)
    for number, process in processes.items():
        if number != victim:
            out, err = process.communicate(timeout=300)
            assert summary(subprocess.CompletedProcess([], process.returncode, out, err))[:3] == (
                expected[number],
                0,
                0,
            )
    written_before = len(victim_uris & set(rows(milvus_server_uri, alias).values()))
    resumed = subprocess.run(shard(victim, 8), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    added, skipped, failed, holds = summary(resumed)
    assert skipped >= written_before > 0 and added + skipped == expected[victim] and failed == 0
    stored = rows(milvus_server_uri, alias)
    assert sorted(stored.values()) == sorted(uris), "every object once: shards disjoint and complete"
    assert holds == len(uris)


def test_sync_adds_replaces_and_deletes_only_under_its_own_prefix(s3_server, catalogue, milvus_uri_each, tmp_path):
    milvus_uri = own_uri(milvus_uri_each, tmp_path)
    bucket, alias = fresh_bucket(s3_server), f"sync_{uuid.uuid4().hex[:8]}"
    photos = variants(catalogue, 9)
    upload(s3_server, bucket, {f"sync/a_b/{n}.jpg": photos[n] for n in range(4)})
    # `a_b` as a like pattern would also match `axb`: these rows must survive a sync of a_b.
    upload(s3_server, bucket, {f"sync/axb/{n}.jpg": photos[4 + n] for n in range(2)})
    env = store_env(s3_server)
    indexed = run_cli(
        "index",
        f"s3://{bucket}/sync/a_b",
        f"s3://{bucket}/sync/axb",
        "--milvus-uri",
        milvus_uri,
        "--collection",
        alias,
        env=env,
    )
    assert summary(indexed) == (6, 0, 0, 6)

    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="sync/a_b/new.jpg", Body=photos[6])
    client.put_object(Bucket=bucket, Key="sync/a_b/1.jpg", Body=photos[7])
    client.delete_object(Bucket=bucket, Key="sync/a_b/2.jpg")
    client.delete_object(Bucket=bucket, Key="sync/axb/0.jpg")
    source = f"s3://{bucket}/sync/a_b"
    milvus = ("--milvus-uri", milvus_uri, "--collection", alias)

    dry = run_cli("sync", source, "--dry-run", *milvus, env=env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.strip().splitlines()
    assert sorted(line for line in lines if line.startswith("would ") and " be " not in line) == sorted(
        [f"would add {source}/new.jpg", f"would update {source}/1.jpg", f"would delete {source}/2.jpg"]
    )
    assert lines[-1].startswith("would be added 1, would be updated 1, would be deleted 1, unchanged 2 (")
    assert len(rows(milvus_uri, alias)) == 6, "a dry run changes nothing"

    synced = run_cli("sync", source, *milvus, env=env)
    assert summary(synced, SYNC_SUMMARY) == (1, 1, 1, 2, 6)
    after = rows(milvus_uri, alias)
    assert sorted(after.values()) == sorted(
        [f"{source}/{name}.jpg" for name in ("0", "1", "3", "new")]
        + [f"s3://{bucket}/sync/axb/0.jpg", f"s3://{bucket}/sync/axb/1.jpg"]
    ), "axb is another prefix: its rows stay, even the one whose object is gone"
    assert hashlib.sha256(photos[7]).hexdigest() in after, "the replaced object's new content is indexed"
    assert hashlib.sha256(photos[1]).hexdigest() not in after, "and its old row is gone"

    # Nothing changed since: the `lister` key, which cannot read, is enough.
    unchanged = run_cli("sync", source, *milvus, env=store_env(s3_server, "lister"))
    assert summary(unchanged, SYNC_SUMMARY) == (0, 0, 0, 4, 6)


def test_a_local_folder_syncs_like_a_prefix_and_a_moved_file_keeps_its_row(catalogue, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = variants(catalogue, 6)
    for number in range(4):
        (folder / f"{number}.jpg").write_bytes(photos[number])
    milvus_uri = str(tmp_path / "milvus.db")
    milvus = ("--milvus-uri", milvus_uri, "--collection", "local")
    manifest = tmp_path / "prices.jsonl"
    manifest.write_text('{"path": "0.jpg", "price": 5}\n{"path": "1.jpg", "price": 3}\n')
    assert summary(run_cli("index", str(folder), "--metadata", str(manifest), *milvus)) == (4, 0, 0, 4)
    signatures = rows(milvus_uri, "local", "signature")
    (folder / "0.jpg").rename(folder / "renamed.jpg")
    (folder / "1.jpg").write_bytes(photos[4])
    (folder / "2.jpg").unlink()
    (folder / "new.jpg").write_bytes(photos[5])
    # Renamed: its row now names the new path (updated, not embedded again); 1 replaced; 2 gone; 3 as it was.
    assert summary(run_cli("sync", str(folder), *milvus), SYNC_SUMMARY) == (1, 2, 1, 1, 4)
    stored = rows(milvus_uri, "local")
    assert stored[hashlib.sha256(photos[0]).hexdigest()] == str((folder / "renamed.jpg").resolve())
    assert sorted(stored.values()) == sorted(
        str((folder / name).resolve()) for name in ("renamed.jpg", "1.jpg", "3.jpg", "new.jpg")
    )
    metadata = rows(milvus_uri, "local", "metadata")
    renamed, replaced = (hashlib.sha256(photos[n]).hexdigest() for n in (0, 4))
    assert metadata[renamed] == {"filename": "renamed.jpg", "price": 5}, "a manifest's fields move with the image"
    assert metadata[replaced] == {"filename": "1.jpg", "price": 3}, "and stay when its content is replaced"
    assert rows(milvus_uri, "local", "signature")[renamed] == signatures[renamed] != "", "so does its copy signature"


def test_a_store_that_stops_mid_run_is_one_clear_error_and_a_rerun_completes(catalogue, milvus_server_uri, tmp_path):
    workdir = tmp_path / "store"
    workdir.mkdir()
    with run_s3_server(workdir) as s3:
        ports = s3.ports
        bucket, alias = fresh_bucket(s3), f"stop_{uuid.uuid4().hex[:8]}"
        objects = {f"p/{number:03d}.jpg": body for number, body in enumerate(variants(catalogue, 30))}
        upload(s3, bucket, objects)
        env = {**os.environ, **store_env(s3)}
        command = index_command(
            f"s3://{bucket}/p",
            milvus_uri=milvus_server_uri,
            alias=alias,
            more=("--batch-size", "1", "--fetch-workers", "1"),
        )
        run = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

        def some_written() -> bool:
            try:
                return len(rows(milvus_server_uri, alias)) > 0
            except Exception:  # noqa: BLE001 - not created or loaded yet
                return False

        wait_for(some_written, timeout_s=300, what="the first rows", interval_s=0.2)
        s3.stop()
        out, err = run.communicate(timeout=120)
    assert run.returncode != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("image-search index: error: ") and "cannot reach the S3 endpoint" in last, err[-2000:]
    assert "Traceback" not in err
    with run_s3_server(workdir, ports=ports) as s3:
        rerun = run_cli(*command[len(CLI) :], env=store_env(s3))
        added, skipped, failed, holds = summary(rerun)
        assert skipped > 0 and added + skipped == len(objects) and holds == len(objects)


@pytest.mark.parametrize(
    ("source", "key", "words"),
    [
        ("s3://{bucket}/p", "writer", "access denied (AccessDenied"),
        ("s3://no-such-bucket-here/p", ACCESS_KEY, "bucket does not exist"),
        ("s3://{bucket}/p", None, "no AWS credentials found"),
        ("gs://{bucket}/p", None, "no Google Cloud credentials found"),
    ],
)
def test_a_source_that_cannot_be_listed_is_one_line_and_nothing_is_written(s3_server, tmp_path, source, key, words):
    bucket = fresh_bucket(s3_server)
    upload(s3_server, bucket, {"p/one.jpg": b"never read"})
    if key is None:
        env = {
            **NO_AMBIENT_CREDENTIALS,
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
            "AWS_ENDPOINT_URL": s3_server.endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": "",
            "NO_GCE_CHECK": "True",
            "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        }
    else:
        env = store_env(s3_server, key)
    milvus_file = tmp_path / "milvus.db"
    for command in ("index", "sync"):
        result = run_cli(command, source.format(bucket=bucket), "--milvus-uri", str(milvus_file), env=env, timeout=120)
        assert result.returncode == 2, result.stdout + result.stderr
        error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert len(error_lines) == 1 and error_lines[0].startswith(f"image-search {command}: error: "), result.stderr
        assert words in error_lines[0]
        assert "Traceback" not in result.stderr
        assert not milvus_file.exists(), "nothing was written"


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory):
    with run_gcs_server(tmp_path_factory.mktemp("gcs")) as running:
        yield running


def test_a_gcs_bucket_is_indexed_skipped_from_its_listing_and_synced(gcs_server, catalogue, tmp_path):
    """The same commands on gs://, through google-cloud-storage against a GCS emulator: the generation plays the
    ETag's part, so a re-run skips what is indexed and a sync re-embeds a replaced object."""
    bucket = gcs_server.client().create_bucket(f"b-{uuid.uuid4().hex[:10]}")
    photos = sorted(catalogue.photos.values())
    for path in photos:
        bucket.blob(f"shop/{path.name}").upload_from_filename(str(path))
    bucket.blob("shop/notes.txt").upload_from_string(b"not a photo")
    milvus_file, env = str(tmp_path / "milvus.db"), {**NO_AMBIENT_CREDENTIALS, **gcs_server.env()}
    source = f"gs://{bucket.name}/shop/"

    first = run_cli("index", source, "--milvus-uri", milvus_file, env=env)
    assert summary(first) == (len(photos), 0, 0, len(photos))
    assert f"skipped gs://{bucket.name}/shop/notes.txt: not an image" in first.stderr
    assert sorted(rows(milvus_file, "images").values()) == sorted(f"{source}{path.name}" for path in photos)
    assert summary(run_cli("index", source, "--milvus-uri", milvus_file, env=env)) == (0, len(photos), 0, len(photos))

    gone, replaced = photos[0], photos[1]
    bucket.blob(f"shop/{gone.name}").delete()
    bucket.blob(f"shop/{replaced.name}").upload_from_string(near_duplicate(replaced.read_bytes()))
    synced = run_cli("sync", source, "--milvus-uri", milvus_file, env=env)
    assert summary(synced, SYNC_SUMMARY) == (0, 1, 1, len(photos) - 2, len(photos) - 1)
    assert f"{source}{gone.name}" not in rows(milvus_file, "images").values()

    missing = run_cli("index", "gs://no-such-bucket-here/p", "--milvus-uri", str(tmp_path / "other.db"), env=env)
    assert missing.returncode == 2 and "bucket does not exist" in missing.stderr, missing.stderr
    assert not (tmp_path / "other.db").exists(), "nothing was written"
