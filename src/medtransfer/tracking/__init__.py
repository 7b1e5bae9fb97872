"""Sinks that observe a fine-tuning run: the progress file and view of a study's run
(:func:`medtransfer.tracking.sinks.run_sinks`) and MLflow (:mod:`medtransfer.tracking.mlflow_sink`,
which imports mlflow). The protocol they implement is :mod:`medtransfer.training.observers`."""
