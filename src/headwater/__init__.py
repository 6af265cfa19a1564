"""headwater: an event-driven job orchestrator.

Every event (cron tick, webhook, ``OUTPUT:`` line, broker message, SDK call) becomes a
durable job; workers run the job's steps and record status, output and logs.
"""

from headwater.errors import HeadwaterError

__version__ = "0.1.0"

__all__ = ["HeadwaterError", "__version__"]
