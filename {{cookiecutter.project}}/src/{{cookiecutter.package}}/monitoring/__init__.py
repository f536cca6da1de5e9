"""Monitoring: drift of the score and features against the training reference, data quality and decay."""
