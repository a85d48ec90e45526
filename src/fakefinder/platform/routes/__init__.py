"""The REST routes of `fakefinder serve`, one router per area: training jobs, artifacts, evaluate and
predict, datasets, the platform's status. Routes translate HTTP to the job store, the queue and the
kind registry; they hold no training logic and name no kind."""
