"""The arguments the chart renders are ones the predictor's own command line accepts."""

import pytest
from chart_helpers import SCENARIOS, of_kind, one, predictors, server_container

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


def test_index_accepts_the_indexing_job_arguments(render, parser) -> None:
    (job,) = of_kind(render("indexing-job"), "Job")
    (indexer,) = job["spec"]["template"]["spec"]["containers"]
    argv = [arg.replace("$(JOB_COMPLETION_INDEX)", "3") for arg in indexer["args"]]
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`image-search index` refuses the Job arguments {indexer['args']}")
    assert (args.shard_index, args.shard_count) == (3, 8)
