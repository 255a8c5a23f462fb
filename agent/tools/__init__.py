"""The technician's commands: one small module each (``liftwatch check``, ``monitor``,
``calibrate``, ``record``, ``events``, ``outbox``, ``plot``, ``config``, ``demo``).

They share the config machinery and the drivers' backends with the daemon, never its
internals (runtime, uplink, commands, health): a tool attached to a running terminal
reads the lift through its own drivers or the terminal's files, and a change to the
daemon cannot break a car-roof tool. ``tests/test_layout.py`` holds the rule.
"""
