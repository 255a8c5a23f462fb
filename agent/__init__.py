"""liftwatch agent: config, runtime, uplink, commands, CLI."""
