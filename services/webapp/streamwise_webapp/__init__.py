"""The web app: the current model version and its live metrics, updating without reload."""
