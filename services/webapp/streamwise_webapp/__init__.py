"""streamwise_webapp."""
