"""The training engine: loop, checkpoints, schedules, logging, distributed launch."""
