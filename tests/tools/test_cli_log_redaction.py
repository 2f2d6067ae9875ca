"""Every log line painmon's CLI prints is redacted: no stream password or token (#12 item 7).

A library's message or a traceback can quote the URL it was given; the CLI's log
formatter is the last place before the terminal or a redirected log file.
"""

from __future__ import annotations

import logging
import sys

import pytest

from painmon.core.tools.cli import _CliLogFormatter

TOKEN = "ghp_abcdEFGH1234567890xyz"
URL = f"rtsp://{TOKEN}:s3cret@10.0.0.5/live"


def _record(level: int, message: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("painmon.test", level, __file__, 1, message, (), exc_info)


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING, logging.ERROR])
def test_a_logged_url_is_redacted(level):
    line = _CliLogFormatter("%(message)s").format(_record(level, f"reconnecting to {URL}"))
    assert TOKEN not in line and "s3cret" not in line
    assert "reconnecting to rtsp://***@10.0.0.5/live" in line


def test_a_traceback_quoting_the_url_is_redacted():
    try:
        raise RuntimeError(f"could not open {URL}")
    except RuntimeError:
        record = _record(logging.ERROR, "capture failed", sys.exc_info())
    line = _CliLogFormatter("%(message)s").format(record)
    assert "Traceback" in line and "RuntimeError: could not open rtsp://***@10.0.0.5/live" in line
    assert TOKEN not in line and "s3cret" not in line


def test_a_line_without_credentials_is_unchanged():
    formatter = _CliLogFormatter("%(message)s")
    assert formatter.format(_record(logging.INFO, "session /tmp/a@b/s1 open")) == (
        "session /tmp/a@b/s1 open"
    )
