"""streamwise_predictor."""
