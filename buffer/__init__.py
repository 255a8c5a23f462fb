"""liftwatch durable outbox and event journal."""
