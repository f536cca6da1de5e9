"""The decision service (BentoML): request models from the contract, decisions, the audit log.

Imports only the light core, never the pipeline's heavy libraries (import-linter checks it).
"""
