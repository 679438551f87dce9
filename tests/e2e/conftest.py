from __future__ import annotations

import pytest

from tests.helpers import Server


@pytest.fixture(scope="module")
def server(tiny_model_root):
    s = Server(tiny_model_root)
    s.wait_ready()
    yield s
    s.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``item.rep_call``): fixtures that keep evidence of
    a failure (the browser's screenshot) read it at teardown."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
