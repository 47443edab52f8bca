"""Physical snapshots: streamed to S3-compatible storage, restored onto new or rebuilt nodes."""
