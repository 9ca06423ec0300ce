"""The dashboard's own errors: each message is one sentence the page shows with st.error."""

from __future__ import annotations


class DashboardError(Exception):
    """A cache or data source problem the user can fix; the message names the file and the fix."""


class NoCachesError(DashboardError):
    """No run folder was found where the dashboard looks for one."""
