"""Governance: the model card and the lineage record."""
