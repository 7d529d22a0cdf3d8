"""streamwise_devstack."""
