"""The image test's `run` command line is the chart's CPU pod: checked here without a container engine."""

import pytest
from chart_helpers import env, one, server_container

from tests.container.chart_pod import MILVUS_URI_VARIABLE, quantity_bytes, run_args, server_pod


@pytest.fixture(scope="module")
def rendered(render):
    return one(render("cpu"), "InferenceService")


def test_the_run_command_carries_the_charts_args_env_and_restrictions(rendered, tmp_path):
    pod = server_pod(rendered)
    container = server_container(rendered["spec"]["predictor"])
    args = run_args(pod, "image-search:test", name="served", publish=True)
    image_at = args.index("image-search:test")
    assert args[image_at + 1 :] == container["args"]
    for name, item in env(container).items():
        assert f"{name}={item['value']}" in args
    flags = " ".join(args[:image_at])
    assert "--user 1000:1000" in flags and "--group-add 1000" in flags
    assert "--read-only " in flags and "--cap-drop ALL" in flags and "--security-opt no-new-privileges" in flags
    assert f"--memory {3 * 2**30}" in flags
    for volume in rendered["spec"]["predictor"]["volumes"]:
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        size = quantity_bytes(volume["emptyDir"]["sizeLimit"])
        assert f"--tmpfs {mount['mountPath']}:rw,size={size},mode=1777" in flags
    assert "--publish 127.0.0.1::8080" in flags and "--publish 127.0.0.1::8081" in flags


def test_milvus_lite_on_a_volume_replaces_the_milvus_server_and_nothing_else(rendered, tmp_path):
    chart = server_pod(rendered)
    pod = chart.with_milvus_lite(tmp_path)
    assert pod.milvus_uri() == "/data/milvus.db"
    assert pod.volumes == ((str(tmp_path), "/data"),)
    assert {k: v for k, v in pod.env.items() if k != MILVUS_URI_VARIABLE} == {
        k: v for k, v in chart.env.items() if k != MILVUS_URI_VARIABLE
    }
    assert [a for a in pod.args if not a.startswith("--milvus-uri=")] == list(chart.args)


def test_a_one_off_command_keeps_the_user_and_restrictions(rendered):
    pod = server_pod(rendered)
    args = run_args(pod, "image-search:test", command=("image-search", "index", "/data"))
    assert args[:2] == ["run", "--rm"]
    assert args[-5:] == ["--entrypoint", "image-search", "image-search:test", "index", "/data"]
    assert "--read-only" in args and "ALL" in args


def test_a_secret_in_the_env_is_refused_rather_than_dropped(render):
    isvc = one(render("cpu", "milvus.tokenSecret.name=milvus-token"), "InferenceService")
    with pytest.raises(ValueError, match="only literal values"):
        server_pod(isvc)


@pytest.mark.parametrize(("text", "expected"), [("1Gi", 2**30), ("512Mi", 2**29), ("2G", 2 * 10**9), ("100", 100)])
def test_quantities(text, expected):
    assert quantity_bytes(text) == expected
