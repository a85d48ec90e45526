"""The training platform behind `fakefinder serve`: a REST API, a job store and queue, executors
(local processes, Ray Jobs) and a web UI, all driving the same task code and configs as the CLI."""
