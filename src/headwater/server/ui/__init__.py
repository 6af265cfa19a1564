"""headwater's web UI: server-rendered pages at ``/``, beside the API.

Why this stack:

- **Jinja2 templates rendered by the server** (Jinja2 is already a dependency): a page
  is the API's own data (``json_shapes`` + ``Runtime.redact``, so secrets are masked by
  the same code) turned into HTML in the same process. No second copy of the data model
  in JavaScript, no build step, nothing for ``pip install`` to compile, and the pages
  work offline: every asset is a package file served at ``/ui/static``.
- **A small vanilla script** (``static/headwater.js``, no framework, no bundler) for what
  a browser must do: live updates, bulk actions, the Run form's checks, log following.
- **Server-Sent Events for live updates**: one long response per page, reconnected by
  the browser on its own (``Last-Event-ID`` resumes a log where it stopped). The server
  renders changed rows with the same template partials and sends the HTML; the script
  swaps them in. A WebSocket would add a protocol and a proxy setting for one-way data.
- **Actions call the public API** (``/api/...``) with the session cookie; the UI has no
  write routes of its own, so it can do nothing the API does not allow.

Tests drive it in a real Chromium (``tests/browser``).
"""

from headwater.server.ui.router import ui_router
from headwater.server.ui.sessions import UiSessions

__all__ = ["UiSessions", "ui_router"]
