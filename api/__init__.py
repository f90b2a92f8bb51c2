"""The interfaces: HTTP (Litestar), the `leadledger` CLI, and the composition root."""
