"""The payments core: idempotency, the payment service, the ledger, reconciliation."""
