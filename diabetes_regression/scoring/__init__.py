"""Azure ML scoring entry script of the diabetes sample."""
