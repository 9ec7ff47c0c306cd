"""docs/configuration.md lists what the `image-search` parser accepts: hack/render-configuration.py writes it."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RENDERER = REPO / "hack" / "render-configuration.py"
PAGE = REPO / "docs" / "configuration.md"


def check(page: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RENDERER), "--check", "--page", str(page)], text=True, capture_output=True, timeout=300
    )


def test_the_committed_page_is_what_the_parser_says():
    result = check(PAGE)
    assert result.returncode == 0, result.stderr


def test_a_page_that_drifted_from_the_parser_is_named(tmp_path):
    stale = tmp_path / "configuration.md"
    page = PAGE.read_text()
    assert "Most images embedded in one forward pass." in page
    stale.write_text(page.replace("Most images embedded in one forward pass.", "Most images per batch."))
    result = check(stale)
    assert result.returncode == 1
    assert f"{stale} is out of date: run hack/render-configuration.py" in result.stderr


def test_each_flag_names_the_variable_it_falls_back_to():
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith("| `--")]
    milvus = next(row for row in rows if row.startswith("| `--milvus-uri`"))
    assert "`IMAGE_SEARCH_MILVUS_URI`, `MILVUS_URI`" in milvus
    shard = next(row for row in rows if row.startswith("| `--shard-index`"))
    assert "`JOB_COMPLETION_INDEX`" in shard
