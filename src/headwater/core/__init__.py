"""The vocabulary every layer shares: statuses, records, log streams (imports nothing of ours
but ``headwater.errors``, which belongs to this layer too; see docs/architecture.md)."""
