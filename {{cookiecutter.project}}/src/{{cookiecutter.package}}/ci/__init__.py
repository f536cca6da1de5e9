"""Pull-request tooling: the gates and the PR report (not DVC stages)."""
