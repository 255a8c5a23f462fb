"""liftwatch drivers: controller link, digital inputs, accelerometer, traces."""
