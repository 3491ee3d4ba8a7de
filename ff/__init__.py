"""Forecasting-and-regression use cases ("ff"): pure data-science steps driven by ``ff/pipeline_config.json``.

Nothing here imports MLflow, Azure or ``ml_service``: orchestration calls these functions.
"""
