"""The contract: event types, commands, controlled vocabularies and SQL migrations.

Nothing in this package imports from the rest of leadledger.
"""
