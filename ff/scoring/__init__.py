"""Azure ML scoring entry script (``score.py``) for the ff use cases."""
