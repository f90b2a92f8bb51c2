"""The write side: the event store, the lead's decision logic, PII encryption, and the relay."""
