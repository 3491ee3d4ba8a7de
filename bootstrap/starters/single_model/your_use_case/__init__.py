"""The your_use_case use case: its code (use_case.py), its configuration (config.json) and its tests (tests/)."""
