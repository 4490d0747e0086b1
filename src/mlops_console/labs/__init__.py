"""Teaching labs: scenarios (data, `labs/scenarios/*.toml`) and the runner that starts,
injects, checks, hints, solves and resets them (`ws.labs`, `mlops lab`)."""
