"""The arguments the chart renders are ones the predictor's own command line accepts."""

import pytest
from chart_helpers import SCENARIOS, env, of_kind, one, predictors, server_container

cli = pytest.importorskip("predictor.cli", reason="the predictor package is not installed")


@pytest.fixture(scope="module")
def parser():
    return cli.build_parser()


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "indexing-job"])
def test_serve_accepts_the_predictor_arguments(render, parser, scenario: str) -> None:
    for name, predictor in predictors(one(render(scenario), "InferenceService")):
        container = server_container(predictor)
        try:
            args = parser.parse_args(["serve", *container["args"]])
        except SystemExit:
            pytest.fail(f"`image-search serve` refuses the {name} arguments {container['args']}")
        assert (args.http_port, args.grpc_port) == (8080, 8081)
        assert args.search_consistency == "Bounded"


def test_index_accepts_the_indexing_job_arguments(render, parser) -> None:
    (job,) = of_kind(render("indexing-job"), "Job")
    (indexer,) = job["spec"]["template"]["spec"]["containers"]
    argv = [arg.replace("$(JOB_COMPLETION_INDEX)", "3") for arg in indexer["args"]]
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`image-search index` refuses the Job arguments {indexer['args']}")
    assert (args.shard_index, args.shard_count) == (3, 8)


def test_index_settings_and_precision_reach_both_the_indexing_job_and_the_predictor(render, parser) -> None:
    from predictor.cli.options import vector_index

    objects = render("indexing-job")
    (job,) = of_kind(objects, "Job")
    (indexer,) = job["spec"]["template"]["spec"]["containers"]
    job_args = parser.parse_args([arg.replace("$(JOB_COMPLETION_INDEX)", "0") for arg in indexer["args"]])
    for _, predictor in predictors(one(objects, "InferenceService")):
        serve_args = parser.parse_args(["serve", *server_container(predictor)["args"]])
        for args in (job_args, serve_args):
            config = vector_index(args)
            assert (config.index_type, config.params, config.search_params) == (
                "IVF_FLAT",
                {"nlist": 2048},
                {"nprobe": 48},
            )
            assert args.filter_columns == "shop:string,year:int"
            assert args.precision == "auto"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_milvus_uri_reaches_the_server_under_a_name_pymilvus_does_not_read(render, monkeypatch, scenario: str) -> None:
    # pymilvus parses MILVUS_URI when it is imported and refuses a milvus-lite path; the chart must not depend on the
    # server's shield against that.
    docs = render(scenario)
    workloads = [c for _, p in predictors(one(docs, "InferenceService")) for c in [server_container(p)]]
    workloads += [c for job in of_kind(docs, "Job") for c in job["spec"]["template"]["spec"]["containers"]]
    for container in workloads:
        variables = env(container)
        assert "MILVUS_URI" not in variables, container["name"]
        uri = variables["IMAGE_SEARCH_MILVUS_URI"]["value"]
        monkeypatch.setenv("IMAGE_SEARCH_MILVUS_URI", uri)
        args = cli.build_parser(for_serving=False).parse_args(["collections"])
        assert args.milvus_uri == uri
