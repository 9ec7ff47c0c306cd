"""The duplicates Job: off by default; on, it runs `image-search duplicates` with arguments the CLI accepts."""

import pytest
from chart_helpers import of_kind, one

cli = pytest.importorskip("predictor.cli", reason="the predictor package is not installed")


def test_the_duplicates_job_is_off_by_default(render) -> None:
    assert not [job for job in of_kind(render(None), "Job") if "duplicates" in job["metadata"]["name"]]


def test_the_duplicates_job_passes_its_settings_to_the_command(render) -> None:
    job = one(
        render(
            None,
            "duplicates.enabled=true",
            "duplicates.threshold=0.93",
            "duplicates.mark=dup",
            "duplicates.namespace=shop",
        ),
        "Job",
    )
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["image-search"]
    args = cli.build_parser().parse_args(container["args"])
    assert (args.threshold, args.mark, args.namespace, args.out) == (0.93, "dup", "shop", "/dev/stdout")
    assert args.handler.__name__ == "_duplicates"


def test_a_filter_with_quotes_reaches_the_command_whole(render) -> None:
    job = one(render(None, "duplicates.enabled=true", 'duplicates.filter=metadata["shop"] == "a"'), "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert cli.build_parser().parse_args(container["args"]).filter == 'metadata["shop"] == "a"'
