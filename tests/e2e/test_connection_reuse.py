"""Outbound connection reuse as the operator sets it: `[outbound]
connection_reuse` is the real keep time (it used to be the client
session's 60 s), "0s" turns reuse off, and a reload closes the old pool's
kept connections. Sessions are counted at the receiver (one STARTTLS
connection = two EHLOs)."""
import signal
import time
import uuid

from bed import wait_for
from test_outbound import SINK, arrived, outbound_relayd, submit


def sessions(bed):
    return len([e for e in bed.events(SINK) if e["event"] == "session"])


def deliver(bed, relayd, tag):
    submit(relayd, "s@example.test", "user@sender.test", tag)
    wait_for(lambda: arrived(bed, SINK, tag), 15, f"delivery of {tag}")


def test_kept_connection_lives_the_configured_time(bed, tmp_path):
    relayd = outbound_relayd(tmp_path, bed, "forced", outbound_extra='connection_reuse = "3s"', name="keep3").start()
    try:
        tag = f"keep-{uuid.uuid4().hex[:6]}"
        start = sessions(bed)
        deliver(bed, relayd, f"{tag}-0")
        assert sessions(bed) - start == 2
        time.sleep(1)
        deliver(bed, relayd, f"{tag}-1")      # within 3 s of the last use: reused
        assert sessions(bed) - start == 2, "a connection inside its keep time was not reused"
        time.sleep(4.5)                        # past 3 s (before the fix it lived 60 s)
        deliver(bed, relayd, f"{tag}-2")
        assert sessions(bed) - start == 4, "a connection past its keep time was reused"
    finally:
        relayd.stop()


def test_reuse_off(bed, tmp_path):
    relayd = outbound_relayd(tmp_path, bed, "forced", outbound_extra='connection_reuse = "0s"', name="keep0").start()
    try:
        tag = f"nokeep-{uuid.uuid4().hex[:6]}"
        start = sessions(bed)
        deliver(bed, relayd, f"{tag}-0")
        deliver(bed, relayd, f"{tag}-1")
        assert sessions(bed) - start == 4, "reuse is off, yet a connection carried two messages"
    finally:
        relayd.stop()


def test_reload_applies_everywhere_and_closes_kept_connections(bed, tmp_path):
    relayd = outbound_relayd(tmp_path, bed, "forced", outbound_extra='connection_reuse = "1m"', name="reload").start()
    try:
        tag = f"reload-{uuid.uuid4().hex[:6]}"
        start = sessions(bed)
        deliver(bed, relayd, f"{tag}-0")
        relayd.config.write_text(relayd.config.read_text().replace('connection_reuse = "1m"', 'connection_reuse = "0s"'))
        relayd.send_signal(signal.SIGHUP)
        wait_for(lambda: "msg=reloaded" in relayd.log_text(), 10, "reloaded")
        deliver(bed, relayd, f"{tag}-1")
        assert sessions(bed) - start == 4, "the connection kept by the old pool carried mail after the reload"
    finally:
        relayd.stop()
