"""streamwise_trainer."""
