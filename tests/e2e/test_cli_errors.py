"""Every CLI error a user can cause is one clear line on stderr and a non-zero exit, never a traceback."""

import subprocess

import pytest

from harness.predictor_server import free_port, run_cli


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr + result.stdout
    for text in expected:
        assert text in lines[0], lines[0]


def nothing_listening() -> str:
    return f"127.0.0.1:{free_port()}"


def test_query_of_a_missing_image_file(tmp_path):
    assert_one_line_error(run_cli("query", str(tmp_path / "nope.jpg")), "cannot read", "nope.jpg")


def test_query_of_a_directory(tmp_path):
    assert_one_line_error(run_cli("query", str(tmp_path)), "cannot read", str(tmp_path))


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_query_of_a_server_that_is_not_running(catalogue, transport):
    address = nothing_listening()
    result = run_cli("query", str(catalogue.photos["coffee"]), "--url", address, "--transport", transport)
    assert_one_line_error(result, "cannot reach the server", address)


def test_query_of_a_host_that_does_not_exist(catalogue):
    result = run_cli("query", str(catalogue.photos["coffee"]), "--url", "http://no-such-host.invalid:8080")
    assert_one_line_error(result, "cannot reach the server", "no-such-host.invalid")


def test_bad_flag_value_names_the_flag_and_where_help_is(catalogue):
    result = run_cli("query", str(catalogue.photos["coffee"]), "--top-k", "ten")
    assert_one_line_error(result, "--top-k", "invalid int value", "--help")


def test_unknown_subcommand():
    assert_one_line_error(run_cli("serach"), "invalid choice", "'serach'")


@pytest.mark.parametrize(
    ("variable", "value", "command", "expected"),
    [
        ("LOG_LEVEL", "LOUD", ["collections"], "unknown log level 'LOUD'"),
        ("JOB_COMPLETION_INDEX", "three", ["index", "."], "--shard-index: invalid int value: 'three'"),
        ("IMAGE_SEARCH_DEVICE", "tpu", ["serve"], "device must be one of"),
        ("IMAGE_SEARCH_FILTER_COLUMNS", "shop", ["index", "."], "--filter-columns: 'shop' needs a kind"),
    ],
)
def test_bad_environment_value(tmp_path, variable, value, command, expected):
    result = run_cli(*command, "--milvus-uri", str(tmp_path / "m.db"), env={variable: value})
    assert_one_line_error(result, expected)


def test_index_of_a_path_that_does_not_exist(tmp_path):
    result = run_cli("index", str(tmp_path / "missing"), "--milvus-uri", str(tmp_path / "m.db"))
    assert_one_line_error(result, "does not exist", "missing")


def test_an_eval_report_it_could_not_write_is_refused_before_the_evaluation(tmp_path):
    labelled = tmp_path / "labelled"
    run_cli("sample-catalogue", "--labelled", "--out", str(labelled)).check_returncode()
    (tmp_path / "a-file").write_text("kept")
    under_a_file = tmp_path / "a-file" / "report.json"
    for report, expected in ((tmp_path, "is a folder"), (under_a_file, "is a file, not a folder")):
        result = run_cli("eval", "--labelled", str(labelled), "--report", str(report))
        assert_one_line_error(result, "--report", expected)
        assert "precision" not in result.stdout, "refused before any image is embedded"
    assert (tmp_path / "a-file").read_text() == "kept"
    # Missing folders are not an error: the report's folders are made.
    made = tmp_path / "new" / "report.json"
    assert run_cli("eval", "--labelled", str(labelled), "--report", str(made)).returncode == 0
    assert "precision_at_5" in made.read_text()


def test_a_projection_folder_it_could_not_write_is_refused_before_the_catalogue_is_embedded(tmp_path, catalogue):
    a_file = tmp_path / "a-file"
    a_file.write_text("kept")
    for out, expected in ((a_file, "is a file; name a folder"), (a_file / "package", "is a file, not a folder")):
        result = run_cli("fit-projection", "--catalogue", str(catalogue.directory), "--out", str(out))
        assert_one_line_error(result, "--out", expected)
        assert "loaded" not in result.stdout + result.stderr, "refused before the model is loaded"
    assert a_file.read_text() == "kept"


def test_model_dir_that_is_not_a_model_package(tmp_path, catalogue):
    result = run_cli(
        "index", str(catalogue.photos["coffee"]), "--model-dir", str(tmp_path), "--milvus-uri", str(tmp_path / "m.db")
    )
    assert_one_line_error(result, "is not a model package")


def test_milvus_that_does_not_answer(tmp_path, catalogue):
    uri = f"http://{nothing_listening()}"
    for command in (["collections"], ["index", str(catalogue.photos["coffee"])]):
        assert_one_line_error(run_cli(*command, "--milvus-uri", uri), "Milvus", uri)


def test_a_command_that_only_reads_refuses_a_milvus_lite_path_with_nothing_there(tmp_path):
    typo = tmp_path / "milvsu.db"
    for command in (
        ["collections"],
        ["promote", "--to", "2"],
        ["rollback"],
        ["reindex"],
        ["duplicates", "--out", str(tmp_path / "clusters.jsonl")],
        ["delete", "--id", "x"],
    ):
        result = run_cli(*command, "--milvus-uri", str(typo))
        assert_one_line_error(result, f"--milvus-uri {typo}: there is no milvus-lite file there", "image-search index")
    assert not typo.exists(), "no empty catalogue is left where the path was mistyped"


def test_unknown_collection(tmp_path):
    uri = str(tmp_path / "m.db")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("index", str(empty), "--milvus-uri", uri).returncode == 0
    assert_one_line_error(
        run_cli("delete", "--id", "x", "--collection", "nope", "--milvus-uri", uri), "nope__", "does not exist"
    )
    assert_one_line_error(run_cli("promote", "--to", "9", "--milvus-uri", uri), "no collection", "'9'")
    assert_one_line_error(run_cli("rollback", "--milvus-uri", uri), "nothing to roll back")


@pytest.mark.parametrize("milvus_uri", ["milvus-lite"], indirect=True)
def test_query_the_server_refuses(server, tmp_path, catalogue):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("a shopping list, not a photo")
    for transport, url in (("http", server.http_url), ("grpc", server.grpc_address)):
        result = run_cli("query", str(not_an_image), "--url", url, "--transport", transport)
        assert_one_line_error(result, "refused the query", "image 0")
    photo = str(catalogue.photos["coffee"])
    bad_filter = run_cli("query", photo, "--url", server.http_url, "--filter", "vector != 0")
    assert_one_line_error(bad_filter, "refused the query", "'vector' is not a metadata field")


@pytest.mark.parametrize("command", [["collections"], ["duplicates", "--out"]])
def test_a_milvus_lite_file_another_process_has_open(tmp_path, command):
    """milvus-lite lets one process at a time use a file: a command run beside a server on the same file says so."""
    from pymilvus import MilvusClient

    held = tmp_path / "milvus.db"
    holder = MilvusClient(uri=str(held))
    try:
        out = [str(tmp_path / "clusters.jsonl")] if command[-1] == "--out" else []
        result = run_cli(*command, *out, "--milvus-uri", str(held))
    finally:
        holder.close()
    assert_one_line_error(result, str(held), "another process has it open")
