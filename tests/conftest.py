import logging
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _quiet_logs():
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    yield
