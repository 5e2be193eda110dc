"""The run directory: one Parquet part file per unit with its integrity record, resume, run.json."""
