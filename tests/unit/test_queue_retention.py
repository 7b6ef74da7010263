"""The sweeper's idea of how long SQS keeps a message is the queue's own retention."""

from __future__ import annotations

from cfnlint.decode import decode
from jobgate.services.sweeper import QUEUE_RETENTION_S, SweepConfig
from jobgate.settings import Settings

from tests.support.aws import TEMPLATE


def test_queue_retention_setting_matches_the_jobs_queue() -> None:
    template, matches = decode(str(TEMPLATE))
    assert template is not None, matches
    retention = int(template["Resources"]["JobsQueue"]["Properties"]["MessageRetentionPeriod"])
    assert retention == QUEUE_RETENTION_S == SweepConfig().queue_retention_s
    assert Settings.model_fields["queue_retention_s"].default == retention
