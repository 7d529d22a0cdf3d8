"""streamwise_ingest."""
