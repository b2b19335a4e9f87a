"""ray_jobs: thin entry scripts that parse a config and call into pipelines."""
