"""streamwise_core."""
