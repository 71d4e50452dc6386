//! Scheduler: node lifecycle state machine, reconcile loop and cost ledger.
