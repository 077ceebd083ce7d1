"""The served app on a pool (`python app.py --devices cpu,cpu --auth ann:secret`), through `gradio_client`:
the login guards the API, and the Gradio queue runs two generations at once, one per worker."""

from __future__ import annotations

import time

import pytest

from app_fixtures import FAST_SIZE, example_file, running_app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.utils import Status  # noqa: E402 - after the importorskip above

LOGIN = ("ann", "secret")
#: What a job reports while a worker runs it (progress updates included).
RUNNING = {Status.PROCESSING, Status.PROGRESS}
#: Steps of each of the two generations that must be seen processing at the same time.
STEPS = 40


def _generate(client, part: str, seed: int):
    handle = gradio_client.handle_file
    return client.submit(**{part: handle(str(example_file(part)))}, pose=handle(str(example_file("pose"))),
                         seed=seed, randomize_seed=False, steps=STEPS, size=FAST_SIZE, api_name="/generate")


def test_login_and_one_generation_per_worker_at_once(tmp_path):
    with running_app("--devices", "cpu,cpu", "--auth", ":".join(LOGIN), log_path=tmp_path / "app.log") as url:
        with pytest.raises(Exception):  # noqa: B017 - gradio_client's own error type for a refused login varies
            gradio_client.Client(url, verbose=False)
        client = gradio_client.Client(url, auth=LOGIN, verbose=False, download_files=str(tmp_path / "downloads"))
        jobs = [_generate(client, "face", 1), _generate(client, "shoes", 2)]
        both_processing = False
        while not all(job.done() for job in jobs):
            running = [job.status().code in RUNNING for job in jobs]
            both_processing = both_processing or all(running)
            time.sleep(0.05)
        statuses = [job.result()[2] for job in jobs]
    log = (tmp_path / "app.log").read_text()
    assert "Loading the model on 2 devices" in log
    assert all("Done" in status for status in statuses)
    assert both_processing, "the two generations never ran at the same time"
