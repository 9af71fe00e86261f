"""The benchmarks: scripts run as `python bench/<name>.py` (see bench/README.md); a package only
so that the type checker names them bench.* apart from the gateway's own packages."""
