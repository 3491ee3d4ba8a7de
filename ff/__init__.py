"""Forecasting-and-regression use cases ("ff"): `nyc_energy_model`, `diabetes_model` and
`nyc_energy_regions_model`, one configuration each (``ff/*.json``), one class (``ff.use_cases.AutoMLUseCase``).

Nothing here imports MLflow, Azure or ``ml_service``: the platform calls the use-case contract.
"""
