"""The credit ledger process: holder-wide pay-later debt (`Ledger` over its LMDB `LedgerStore`),
and the clients a shard uses to reach it (`client`)."""
