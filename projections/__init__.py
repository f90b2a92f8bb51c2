"""Read models: the runner that feeds them from the ledger and NATS, each model's own module
(its apply and its queries side by side), checkpoints, rebuilds and status."""
