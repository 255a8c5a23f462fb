"""The shared fixtures work: the broker and the pty link are real."""

from __future__ import annotations

import serial


def test_broker_accepts_connections(broker) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-check")
    assert c.connect(broker.host, broker.port) == 0
    c.disconnect()


def test_pty_pair_carries_bytes(pty_pair) -> None:
    with serial.Serial(pty_pair.a, 115200, timeout=1) as a, \
            serial.Serial(pty_pair.b, 115200, timeout=1) as b:
        a.write(b"\x01\x03\x00\x00")
        assert b.read(4) == b"\x01\x03\x00\x00"
