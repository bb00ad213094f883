"""Command-line tools around the pipeline (``leaf why``, ...): not steps of the DAG."""
