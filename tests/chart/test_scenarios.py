"""What each scenario must do: GPU scheduling, canary routing, autoscaling per mode, the indexing Job."""

from chart_helpers import env, flags, of_kind, one, predictors, server_container

ANNOTATION_MODE = "serving.kserve.io/deploymentMode"
ANNOTATION_AUTOSCALER = "serving.kserve.io/autoscalerClass"


def isvc_of(render, scenario: str | None, *set_values: str) -> dict:
    return one(render(scenario, *set_values), "InferenceService")


def test_predictor_serves_v2_health_on_http_and_grpc_ports(render) -> None:
    container = server_container(isvc_of(render, "cpu")["spec"]["predictor"])
    assert container["name"] == "kserve-container"
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {("http1", 8080), ("h2c", 8081)}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/models/image-search/ready", "port": 8080}
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    args = flags(container)
    assert (args["http_port"], args["grpc_port"], args["workers"]) == ("8080", "8081", "1")


def test_cpu_scenario_runs_on_cpu_with_an_hpa_on_cpu(render) -> None:
    isvc = isvc_of(render, "cpu")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"] == {ANNOTATION_MODE: "Standard", ANNOTATION_AUTOSCALER: "hpa"}
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 70)
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    container = server_container(predictor)
    assert flags(container)["device"] == "cpu"
    assert not any("gpu" in name for name in container["resources"].get("limits", {}))


def test_gpu_scenario_requests_a_gpu_on_gpu_nodes_and_runs_cuda(render) -> None:
    predictor = isvc_of(render, "gpu")["spec"]["predictor"]
    container = server_container(predictor)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert flags(container)["device"] == "cuda"
    assert predictor["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
    assert predictor["runtimeClassName"] == "nvidia"


def test_gpu_block_keeps_user_scheduling_and_takes_its_own_affinity(render) -> None:
    predictor = isvc_of(
        render,
        "gpu",
        "predictor.nodeSelector.pool=inference",
        "gpu.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].key=nvidia.com/gpu.product",
        "gpu.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].operator=Exists",
    )["spec"]["predictor"]
    assert predictor["nodeSelector"] == {"pool": "inference", "nvidia.com/gpu.present": "true"}
    assert "nodeAffinity" in predictor["affinity"]


def test_model_package_is_mounted_by_kserve_and_passed_as_model_dir(render) -> None:
    container = server_container(isvc_of(render, "gpu")["spec"]["predictor"])
    assert env(container)["STORAGE_URI"]["value"] == "s3://models/image-search/efficientnet-lite0/1"
    assert flags(container)["model-dir"] == "/mnt/models"


def test_without_a_storage_uri_the_baked_in_model_is_served(render) -> None:
    container = server_container(isvc_of(render, "cpu")["spec"]["predictor"])
    assert "STORAGE_URI" not in env(container)
    assert "model-dir" not in flags(container)


def test_canary_scenario_routes_its_percent_to_a_predictor_with_the_new_model(render) -> None:
    isvc = isvc_of(render, "canary")
    stable = isvc["spec"]["predictor"]
    (canary,) = isvc["spec"]["canary"]
    assert canary["trafficPercent"] == 20
    assert canary["predictor"]["name"] == "v2"
    new, old = server_container(canary["predictor"]), server_container(stable)
    assert env(new)["STORAGE_URI"]["value"].endswith("/2") and env(old)["STORAGE_URI"]["value"].endswith("/1")
    assert flags(new)["model-dir"] == "/mnt/models"
    assert canary["predictor"]["labels"]["image-search/model-version"] == "2"
    assert stable["labels"]["image-search/model-version"] == "1"
    # KServe refuses autoscaling fields on a canary; its replicas follow its share of the traffic.
    assert not {"maxReplicas", "scaleMetric", "scaleTarget", "autoScaling"} & canary["predictor"].keys()


def test_canary_searches_its_own_collection(render) -> None:
    isvc = isvc_of(render, "canary", "canary.collection=images_v2")
    (canary,) = isvc["spec"]["canary"]
    assert flags(server_container(canary["predictor"]))["collection"] == "images_v2"
    assert flags(server_container(isvc["spec"]["predictor"]))["collection"] == "images"


def test_canary_pods_differ_from_stable_pods_only_in_their_model(render) -> None:
    (stable, canary) = [server_container(p) for _, p in predictors(isvc_of(render, "canary"))]
    differing = {key for key in stable if stable[key] != canary[key]}
    assert differing == {"env"}
    assert {k: v for k, v in env(stable).items() if k != "STORAGE_URI"} == {
        k: v for k, v in env(canary).items() if k != "STORAGE_URI"
    }


def test_knative_canary_uses_canary_traffic_percent_on_the_new_revision(render) -> None:
    isvc = isvc_of(render, "knative", "canary.enabled=true", "canary.storageUri=gs://m/2", "canary.version=2")
    predictor = isvc["spec"]["predictor"]
    assert "canary" not in isvc["spec"]
    assert predictor["canaryTrafficPercent"] == 10
    assert env(server_container(predictor))["STORAGE_URI"]["value"] == "gs://m/2"
    assert predictor["labels"]["image-search/model-version"] == "2"


def test_knative_scenario_scales_on_concurrency_and_to_zero(render) -> None:
    isvc = isvc_of(render, "knative")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"] == {ANNOTATION_MODE: "Knative"}
    assert predictor["minReplicas"] == 0
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 8)
    assert predictor["containerConcurrency"] == 32
    assert predictor["annotations"]["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == "5m"
    container = server_container(predictor)
    # Knative routes one port per container, and refuses fields it manages itself.
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    assert "startupProbe" not in container and "terminationGracePeriodSeconds" not in predictor


def test_keda_scenario_scales_on_a_prometheus_query_of_in_flight_requests(render) -> None:
    isvc = isvc_of(render, "keda")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"][ANNOTATION_AUTOSCALER] == "keda"
    assert "scaleMetric" not in predictor
    (metric,) = predictor["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    external = metric["external"]
    assert external["metric"]["backend"] == "prometheus"
    assert external["metric"]["query"] == (
        'sum(image_search_requests_in_flight{namespace="search", pod=~"image-search-predictor-.*"})'
    )
    assert external["target"] == {"type": "Value", "value": "4"}


def test_indexing_job_is_off_by_default(render) -> None:
    for scenario in (None, "cpu", "gpu", "canary", "knative", "keda"):
        assert not of_kind(render(scenario), "Job"), scenario


def test_indexing_job_runs_one_indexed_completion_per_shard(render) -> None:
    job = one(render("indexing-job"), "Job")
    spec = job["spec"]
    assert job["metadata"]["name"] == "image-search-index-1"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 8, 4)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (indexer,) = pod["containers"]
    assert indexer["command"] == ["image-search"]
    assert indexer["args"][:2] == ["index", "/data/source/photos"]
    args = flags(indexer)
    assert args["shard-index"] == "$(JOB_COMPLETION_INDEX)"
    assert args["shard-count"] == "8"
    assert (args["batch-size"], args["milvus-uri"], args["model-dir"]) == (
        "128",
        "http://milvus.search:19530",
        "/mnt/models",
    )
    index_env = env(indexer)["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index_env == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "catalogue", "readOnly": True}
    (initializer,) = pod["initContainers"]
    assert initializer["args"] == ["s3://models/image-search/efficientnet-lite0/1", "/mnt/models"]


def test_indexing_job_downloads_a_source_it_cannot_read_itself_first(render) -> None:
    job = one(
        render("indexing-job", "indexing.source.pvc.claimName=", "indexing.source.uri=https://example.com/photos/"),
        "Job",
    )
    pod = job["spec"]["template"]["spec"]
    initializers = {c["name"]: c["args"] for c in pod["initContainers"]}
    assert initializers["source-initializer"] == ["https://example.com/photos/", "/data/source"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes["source"]
    assert pod["containers"][0]["args"][1] == "/data/source"


def test_promoted_predictor_name_follows_into_the_test_and_keda_query(render) -> None:
    docs = render("keda", "model.predictorName=v2")
    isvc = one(docs, "InferenceService")
    assert isvc["spec"]["predictor"]["name"] == "v2"
    query = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]["query"]
    assert 'pod=~"image-search-v2-predictor-.*"' in query
    test_pod = one(docs, "Pod")
    assert "http://image-search-v2-predictor.search.svc.cluster.local" in test_pod["spec"]["containers"][0]["command"]


def test_clip_scenario_serves_and_indexes_a_clip_package_from_its_storage_uri(render) -> None:
    docs = render("clip")
    container = server_container(one(docs, "InferenceService")["spec"]["predictor"])
    assert env(container)["STORAGE_URI"]["value"] == "s3://models/image-search/vit-b-32-laion2b/1"
    assert flags(container)["model-dir"] == "/mnt/models"
    pod = one(docs, "Job")["spec"]["template"]["spec"]
    initializers = {c["name"]: c["args"] for c in pod["initContainers"]}
    assert ["s3://models/image-search/vit-b-32-laion2b/1", "/mnt/models"] in initializers.values()
    # The catalogue is read from the object store by the indexer itself; only the model is downloaded first.
    assert "source-initializer" not in initializers
    assert pod["containers"][0]["args"][1] == "s3://catalogue/images/"
    assert flags(pod["containers"][0])["model-dir"] == "/mnt/models"
