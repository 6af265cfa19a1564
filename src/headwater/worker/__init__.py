"""Workers: claim jobs and run their flows."""
