"""Biometric privacy: field policies, envelope encryption under per-job keys, retention,
erasure and the audit log."""
