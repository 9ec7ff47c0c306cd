"""Catalogues in object stores: the indexing Job and the sync CronJob read s3:// and gs:// directly, with the
credentials of `objectStore`, which the predictor gets too for thumbnails; a PVC source works as before."""

from chart_helpers import env, flags, of_kind, one, server_container


def pod_of(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def test_an_s3_source_is_read_by_the_indexer_itself_with_no_download_and_no_source_volume(render) -> None:
    pod = pod_of(one(render("object-store"), "Job"))
    (indexer,) = pod["containers"]
    assert indexer["args"][:2] == ["index", "s3://catalogue/photos/"]
    assert flags(indexer)["fetch-workers"] == "32"
    assert [c["name"] for c in pod["initContainers"]] == ["model-initializer"], "no source-initializer"
    assert "source" not in {volume["name"] for volume in pod["volumes"]}
    assert "source" not in {mount["name"] for mount in indexer["volumeMounts"]}


def test_store_credentials_come_from_the_secret_and_the_endpoint_from_plain_environment(render) -> None:
    docs = render("object-store")
    job_pod = pod_of(one(docs, "Job"))
    cron_pod = pod_of(one(docs, "CronJob")["spec"]["jobTemplate"])
    predictor = server_container(one(docs, "InferenceService")["spec"]["predictor"])
    for container in (job_pod["containers"][0], cron_pod["containers"][0], predictor):
        assert container["envFrom"] == [{"secretRef": {"name": "catalogue-reader"}}]
        variables = env(container)
        assert variables["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
        assert variables["AWS_REGION"]["value"] == "us-east-1"
        assert not any("SECRET" in name or "KEY_ID" in name for name in variables), "never a credential in values"


def test_the_predictor_may_reach_the_store_through_the_network_policy(render) -> None:
    assert 9000 not in egress_ports(render("object-store")), "only the search page reads objects"
    assert 9000 in egress_ports(render("object-store", "ui.enabled=true"))


def egress_ports(docs: list[dict]) -> list[int]:
    policy = one(docs, "NetworkPolicy")
    return [port["port"] for rule in policy["spec"]["egress"] for port in rule.get("ports", [])]


def test_a_gcp_key_file_is_mounted_and_named_by_google_application_credentials(render) -> None:
    docs = render(
        "object-store",
        "indexing.source.uri=gs://catalogue/photos",
        "objectStore.gcpKeySecret=gcs-key",
        "objectStore.credentialsSecret=",
    )
    pod = pod_of(one(docs, "Job"))
    (indexer,) = pod["containers"]
    assert indexer["args"][1] == "gs://catalogue/photos"
    assert env(indexer)["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/var/run/secrets/gcp/key.json"
    assert {"name": "gcp-key", "mountPath": "/var/run/secrets/gcp", "readOnly": True} in indexer["volumeMounts"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["gcp-key"]["secret"]["secretName"] == "gcs-key"
    assert "envFrom" not in indexer


def test_sync_is_off_by_default(render) -> None:
    for scenario in (None, "cpu", "indexing-job", "search-page"):
        assert not of_kind(render(scenario), "CronJob"), scenario


def test_sync_runs_on_its_schedule_as_a_sharded_indexed_job_one_run_at_a_time(render) -> None:
    cron = one(render("object-store"), "CronJob")
    assert cron["spec"]["schedule"] == "15 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 2, 2)
    (syncer,) = pod_of(cron["spec"]["jobTemplate"])["containers"]
    assert syncer["args"][:2] == ["sync", "s3://catalogue/photos/"]
    args = flags(syncer)
    assert (args["shard-index"], args["shard-count"]) == ("$(JOB_COMPLETION_INDEX)", "2")
    assert "dry-run" not in args
    assert (
        "--dry-run"
        in one(render("object-store", "sync.dryRun=true"), "CronJob")["spec"]["jobTemplate"]["spec"]["template"][
            "spec"
        ]["containers"][0]["args"]
    )


def test_sync_of_a_pvc_source_mounts_the_claim_where_the_indexing_job_does(render) -> None:
    docs = render("indexing-job", "sync.enabled=true")
    job_container = pod_of(one(docs, "Job"))["containers"][0]
    cron_pod = pod_of(one(docs, "CronJob")["spec"]["jobTemplate"])
    assert cron_pod["containers"][0]["args"][1] == job_container["args"][1] == "/data/source/photos"
    volumes = {volume["name"]: volume for volume in cron_pod["volumes"]}
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "catalogue", "readOnly": True}


def test_sync_without_a_source_it_can_list_is_refused(render) -> None:
    message = render.failure("object-store", "indexing.source.uri=https://example.com/photos/")
    assert "sync.enabled needs indexing.source" in message
    assert "sync.parallelism is above sync.shards" in render.failure("object-store", "sync.parallelism=3")
