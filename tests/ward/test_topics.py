"""Ward topic names: built, parsed, and refused when a label could reach another bed."""

from __future__ import annotations

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.ward import topics


def test_topic_round_trip_for_every_leaf():
    for leaf in topics.LEAVES:
        name = topics.topic("ward-3", "bed_12.a", leaf)
        assert name == f"painmon/v1/ward-3/bed_12.a/{leaf}"
        assert topics.parse_topic(name) == ("ward-3", "bed_12.a", leaf)


def test_qos_and_retained_follow_the_contract():
    assert (topics.qos_of("obs"), topics.retained("obs")) == (0, False)
    assert (topics.qos_of("alarm/event"), topics.retained("alarm/event")) == (1, False)
    assert (topics.qos_of("alarm/state"), topics.retained("alarm/state")) == (1, True)
    assert (topics.qos_of("status"), topics.retained("status")) == (1, True)
    for leaf in ("cmd/receipt", "cmd/acknowledge", "cmd_reply"):
        assert (topics.qos_of(leaf), topics.retained(leaf)) == (1, False)


@pytest.mark.parametrize(
    "label", ["", "a/b", "+", "#", "bed+1", "bed#", "$SYS", "bed 1", "-bed", "x" * 33, "bé"]
)
def test_bad_labels_refused(label):
    with pytest.raises(InvalidInputError, match="not valid"):
        topics.topic("ward", label, "obs")
    with pytest.raises(InvalidInputError):
        topics.topic(label, "bed", "obs")


@pytest.mark.parametrize(
    "name",
    [
        "painmon/v2/w/b/obs",
        "painmon/v1/w/b",
        "painmon/v1/w/b/unknown",
        "painmon/v1/w/+/obs",
        "painmon/v1/w/b/obs/extra",
        "other/w/b/obs",
    ],
)
def test_parse_refuses_foreign_topics(name):
    with pytest.raises(InvalidInputError):
        topics.parse_topic(name)


def test_subscriptions():
    assert topics.bed_subscriptions("w1", "b2") == ["painmon/v1/w1/b2/cmd/#"]
    assert topics.station_subscriptions() == [
        "painmon/v1/+/+/obs",
        "painmon/v1/+/+/alarm/#",
        "painmon/v1/+/+/status",
        "painmon/v1/+/+/cmd_reply",
    ]
    assert topics.station_subscriptions("w1")[0] == "painmon/v1/w1/+/obs"
    with pytest.raises(InvalidInputError):
        topics.station_subscriptions("#")
