"""Intake of flagged listings: the schema-v1 contract, its validation, storage and dead letters."""
