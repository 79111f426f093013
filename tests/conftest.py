"""Shared fixtures: one smoke-sized book, executed once per test session."""

from pathlib import Path

import pytest

from tunestudy import runs

CHAPTERS = [c for c in runs.CHAPTERS if c.source.exists()]


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Path:
    """A book root whose book/chapters holds every chapter executed with smoke=True, from an empty cache.

    test_chapters checks each chapter's outputs and test_browser renders the same pages,
    so the suite executes every chapter only once.
    """
    root = tmp_path_factory.mktemp("smoke_book")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESTUDY_CACHE", str(root / "cache"))  # the chapters' kernels inherit it
        # as `make book` runs them: the first alone, then two at once on a multi-core CPU
        runs.run_chapters(CHAPTERS, output_dir=root / "book" / "chapters", smoke=True)
    return root
