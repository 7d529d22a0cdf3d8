"""Pure decisions: the model lifecycle, progressive validation, retraining, pipelines."""
