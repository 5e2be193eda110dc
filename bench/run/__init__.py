"""Running units: executors (local, Dask, Slurm), the unit runner, the solver process behind the counted oracle, the budgeted prior, and tuning (a run on validation images)."""
