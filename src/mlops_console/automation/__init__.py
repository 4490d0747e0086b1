"""The automation daemon: schedules, file watchers, the job queue and its control API."""
