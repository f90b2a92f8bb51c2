"""The processing plane: reactors that read the ledger and append their results through the
same command path as a person would (scoring first; enrichment, routing and webhooks later).

Pure parts (a lead's facts, rule evaluation, what-if reports) are plain functions over
folded events; the runners that read and write the ledger sit at the edges.
"""
